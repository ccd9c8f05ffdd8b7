"""``auto_patch()`` with no argument: the SDKs imported now are patched now, the others when the
program imports them — never imported by PipeLens (litellm takes seconds to import).

Each test is a fresh interpreter, so that which modules are imported is the program's doing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
ROOT = HERE.parent.parent

#: The start of every script: the OpenAI stub serving, every event captured in memory.
PRELUDE = """
import json, sys
from _openai_stub import StubServer
import pipelens
from pipelens.testing import capture_runs

stub = StubServer().__enter__()
ROUTE = {"api_base": stub.base_url, "api_key": "sk-test", "num_retries": 0, "timeout": 5}
MESSAGES = [{"role": "user", "content": "hi"}]
facts = {}
"""


def run_script(body: str) -> dict[str, Any]:
    """Run ``body`` after the prelude in a new interpreter; the ``facts`` it printed."""
    code = PRELUDE + textwrap.dedent(body) + "\nprint(json.dumps(facts))\n"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join((str(ROOT), str(HERE)))}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    facts: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return facts


def test_an_sdk_not_imported_is_patched_when_the_program_imports_it() -> None:
    """After ``auto_patch()`` litellm is still not imported; once the program imports it (even
    as ``from litellm import completion``), its completion is one LLM step."""
    facts = run_script(
        """
        import openai
        names = pipelens.auto_patch()
        facts["names"] = sorted(names)
        facts["imported"] = sorted(
            n for n in ("litellm", "anthropic", "google.genai") if n in sys.modules
        )
        facts["openai_patched_now"] = pipelens._llm.patch.is_patched("openai")
        facts["litellm_patched_before_import"] = pipelens._llm.patch.is_patched("litellm")
        from litellm import completion
        facts["litellm_patched_on_import"] = pipelens._llm.patch.is_patched("litellm")
        with capture_runs() as captured:
            completion("openai/gpt-4o", MESSAGES, **ROUTE)
        facts["steps"] = [(s.key, s.kind) for s in captured.steps()]
        """
    )
    assert facts == {
        "names": ["anthropic", "google.genai", "litellm", "openai"],
        "imported": [],
        "openai_patched_now": True,
        "litellm_patched_before_import": False,
        "litellm_patched_on_import": True,
        "steps": [["litellm_chat", "llm"]],
    }


def test_unpatch_before_the_import_leaves_the_sdk_unpatched() -> None:
    """``unpatch()`` also cancels the patching of SDKs not imported yet."""
    facts = run_script(
        """
        pipelens.auto_patch()
        pipelens.unpatch()
        import anthropic
        facts["patched"] = pipelens._llm.patch.is_patched("anthropic")
        pipelens.auto_patch()
        facts["patched_again"] = pipelens._llm.patch.is_patched("anthropic")
        """
    )
    assert facts == {"patched": False, "patched_again": True}
