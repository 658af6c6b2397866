"""`pjudge`: the command line (SPEC section 7). Each verb lives in `pjudge/commands/<module>.py`
and is imported only when used, so `pjudge --help` stays fast."""

from __future__ import annotations

import importlib

import click

# verb -> (module in pjudge.commands, attribute, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "judge": ("judging", "judge_command", "Judge ITEMS.jsonl in-process, in both orders, into VERDICTS.jsonl."),
    "import": ("importing", "import_command", "Turn recorded outputs of published judges into verdicts."),
    "calibrate": ("calibrate", "calibrate_command",
                  "Thresholds for a judge cascade with a guaranteed accuracy; --plan compares sub-cascades."),
    "report": ("report", "report_command", "Agreement, certainty, position bias and HITL statistics."),
    "personalization": ("personalization", "personalization_command",
                        "Degree of personalization (PerSEval, EGISES) of responses."),
    "llm-sim": ("sim", "llm_sim_command", "Serve a simulated LLM judge (OpenAI and Anthropic protocols)."),
    "demo": ("demo", "demo_command", "The whole path on the embedded default, ending in a summary."),
    "worker": ("worker", "worker_command", "Run a Celery worker of the judging service."),
    "serve": ("serve", "serve_command", "Serve the HTTP API (jobs, verdicts, labels, reports, metrics)."),
    "keys": ("keys", "keys_command", "Create, list and revoke API keys of the HTTP API."),
    "submit": ("submit", "submit_command", "Submit ITEMS.jsonl to a pjudge API; optionally wait for the verdicts."),
    "estimate": ("estimate", "estimate_command",
                 "Calls, tokens and cost of judging ITEMS.jsonl with a profile, before anything runs."),
    "export": ("export", "export_command",
               "Preference rows (prompt/chosen/rejected) of VERDICTS.jsonl for training: JSON Lines or Parquet."),
    "config": ("config", "config_command", "Print the effective settings (environment, else defaults), secrets masked."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module_name, attribute, _ = COMMANDS[name]
        module = importlib.import_module(f"pjudge.commands.{module_name}")
        command: click.Command = getattr(module, attribute)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # From the static table, so that help imports no command module.
        with formatter.section("Commands"):
            formatter.write_dl([(name, COMMANDS[name][2]) for name in self.list_commands(ctx)])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="persona-judge")
def main() -> None:
    """persona-judge: LLM-as-a-personalized-judge, in both orders, with certainty and abstention."""


if __name__ == "__main__":
    main()
