"""Agents: daemons that claim tasks from queues and run them (``stepline agent``)."""

from stepline.agent.agent import Agent

__all__ = ["Agent"]
