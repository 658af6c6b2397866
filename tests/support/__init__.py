"""What the tests share: builders of items and verdicts, the API's test keys, the CLI in a
subprocess, the real services. Imported by tests only (bench/ has its own; see llm_sim/harness.py);
fixtures stay in tests/conftest.py."""
