"""``python -m stepline.runner TASK_ID``: run one stored task in this process.

See ``stepline.pipeline.runner`` for what it does."""

import sys

from stepline.pipeline.runner import main

if __name__ == "__main__":
    sys.exit(main())
