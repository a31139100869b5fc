"""Durable state: rollouts, their step journal, history, operator controls, module bytes."""
