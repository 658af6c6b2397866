"""`pjudge llm-sim`: the local simulated LLM judge server."""

from __future__ import annotations

import click

from pjudge.common import FloatRange, handle_errors


def _rate(name: str) -> FloatRange:
    return FloatRange(0.0, 1.0)


@click.command("llm-sim")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535), help="0 picks a free port.")
@click.option("--latency-ms", default=0.0, show_default=True, type=FloatRange(0), help="Delay of each answer.")
@click.option("--first-bias", default=0.0, show_default=True, type=_rate("first-bias"),
              help="Probability of choosing the answer shown first whatever it says.")
@click.option("--noise", default=0.0, show_default=True, type=_rate("noise"), help="Probability of flipping the preference.")
@click.option("--fail-rate", default=0.0, show_default=True, type=_rate("fail-rate"), help="Share of 429/500 answers.")
@click.option("--malformed-rate", default=0.0, show_default=True, type=_rate("malformed-rate"),
              help="Share of answers in no parseable format.")
@click.option("--retry-after-ms", default=100.0, show_default=True, type=FloatRange(0),
              help="Retry-After sent with injected failures.")
@click.option("--batch-delay-s", default=2.0, show_default=True, type=FloatRange(0),
              help="Batch endpoints: a batch ends this long after it was created.")
@click.option("--batch-fail-rate", default=0.0, show_default=True, type=_rate("batch-fail-rate"),
              help="Batch endpoints: share of a batch's requests that end in an error.")
@click.option("--batch-expire-rate", default=0.0, show_default=True, type=_rate("batch-expire-rate"),
              help="Batch endpoints: share of a batch's requests that expire unanswered.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--cache-min-tokens", default=1024, show_default=True, type=click.IntRange(1),
              help="OpenAI-style automatic prompt caching: the least prompt length cached (in 128-token steps).")
@click.option("--anthropic-cache-min-tokens", default=1024, show_default=True, type=click.IntRange(1),
              help="Anthropic-style prompt caching: the least cacheable prefix (up to a cache_control breakpoint).")
@click.option("--record-requests", default=0, show_default=True, type=click.IntRange(0),
              help="Keep the last N requests (bodies and headers, keys left out) for GET /requests.")
@handle_errors
def llm_sim_command(host: str, port: int, latency_ms: float, first_bias: float, noise: float, fail_rate: float,
                    malformed_rate: float, retry_after_ms: float, batch_delay_s: float, batch_fail_rate: float,
                    batch_expire_rate: float, seed: int, cache_min_tokens: int,
                    anthropic_cache_min_tokens: int, record_requests: int) -> None:
    """Serve a simulated judge speaking the OpenAI and Anthropic wire protocols.

    Point a profile at it with provider openai-compatible and base URL http://HOST:PORT/v1, or
    anthropic with base URL http://HOST:PORT. Its model names start with `sim-`. GET /stats counts
    the requests it served and the input tokens its prompt caches read and wrote (approximate: 4
    characters a token), as each provider reports them in `usage`. It also serves OpenAI's files and
    batches endpoints and Anthropic's message batches (profile mode "batch", pjudge judge --batch),
    each request answered as the interactive endpoint would.
    """
    from llm_sim.server import ServerSettings, serve_forever

    settings = ServerSettings(first_bias=first_bias, noise=noise, fail_rate=fail_rate,
                              malformed_rate=malformed_rate, seed=seed, latency_ms=latency_ms,
                              retry_after_ms=retry_after_ms, cache_min_tokens=cache_min_tokens,
                              anthropic_cache_min_tokens=anthropic_cache_min_tokens, record_requests=record_requests,
                              batch_delay_s=batch_delay_s, batch_fail_rate=batch_fail_rate,
                              batch_expire_rate=batch_expire_rate)

    def announce(bound: int) -> None:
        click.echo(f"llm-sim listening on http://{host}:{bound}", err=False)
        click.echo(f"  OpenAI base URL:    http://{host}:{bound}/v1", err=False)
        click.echo(f"  Anthropic base URL: http://{host}:{bound}", err=False, nl=True)

    try:
        serve_forever(settings, host, port, on_bound=announce)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from None
