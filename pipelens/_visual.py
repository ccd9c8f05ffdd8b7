"""Local charts of a step tree (placeholder until the charts land)."""

from __future__ import annotations

from typing import Any

from pipelens._step import Step


def gantt_svg(root: Step, **options: Any) -> str:
    raise NotImplementedError


def gantt_html(root: Step, **options: Any) -> str:
    raise NotImplementedError


def execution_graph_mermaid(root: Step) -> str:
    raise NotImplementedError


def execution_graph_dot(root: Step) -> str:
    raise NotImplementedError


def tree_text(root: Step) -> str:
    """One line a step: indentation by depth, name, status, duration in ms."""
    lines: list[str] = []

    def visit(step: Step, depth: int) -> None:
        ms = "" if step.duration_ns is None else f" {step.duration_ns / 1e6:.1f} ms"
        lines.append(f"{'  ' * depth}{step.name} [{step.status}]{ms}")
        for child in step.children:
            visit(child, depth + 1)

    visit(root, 0)
    return "\n".join(lines)
