"""Workflows: durable orchestration only; every side effect runs in an activity."""
