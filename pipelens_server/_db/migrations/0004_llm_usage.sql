-- The LLM usage page reads, over a time range, the usage of finished runs (runs.llm_usage) and
-- the calls of runs without it (steps.llm): both are a small part of their tables.
CREATE INDEX runs_llm_usage_start_idx ON runs (start_ns) WHERE llm_usage IS NOT NULL;
CREATE INDEX steps_llm_start_idx ON steps (start_ns) WHERE llm IS NOT NULL;
