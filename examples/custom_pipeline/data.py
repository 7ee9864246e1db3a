"""The data of the custom pipeline example: the iris table, split the same way every time.

A local module of ``train.py``: the task stores it with the script, so an agent that has none
of these files still runs the trial with it.
"""

from sklearn.datasets import load_iris
from sklearn.model_selection import train_test_split

VALIDATION_SHARE = 0.5
SEED = 0


def load_split():
    """(X_train, X_valid, y_train, y_valid): a stratified half/half split of iris."""
    X, y = load_iris(return_X_y=True)
    return train_test_split(X, y, test_size=VALIDATION_SHARE, random_state=SEED, stratify=y)
