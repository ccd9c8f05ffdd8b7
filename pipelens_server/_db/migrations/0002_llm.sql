-- LLM calls and usage (wire fields StepFinished.llm and RunFinished.llm_usage, JSON text):
-- the call a kind="llm" step made, and a run's token usage by model. Both merge like the other
-- captured values (see pipelens_server/_rows.py).

ALTER TABLE steps ADD COLUMN llm jsonb;
ALTER TABLE runs ADD COLUMN llm_usage jsonb;
