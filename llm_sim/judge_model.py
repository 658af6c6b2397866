"""The simulated judge behind `pjudge llm-sim`: reads a judge prompt, answers like a biased,
noisy LLM judge whose hidden preference is the response sharing more content words with the
persona.

Every random draw comes from a hash of the seed and the request itself (never from one shared
stream), so the same request gets the same answer whatever the order or concurrency.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from dataclasses import dataclass

_ANSWER = re.compile(
    r"\[The Start of Assistant (\w+)'s Answer\]\n(.*?)\n+\[The End of Assistant \1's Answer\]", re.DOTALL
)
_PERSONA = re.compile(r"\[User Profile\]\n(.*?)(?:\n\s*\n|\n\[)", re.DOTALL)
_WORD = re.compile(r"[a-z]+")
STOPWORDS = frozenset(
    """the and for are but not you your with this that have has had was were will would can could should
    into from they them their there then than what when where which who whom why how all any both each
    few more most other some such only own same too very just also about above after again against
    because been before being below between down during further here its itself off once out over
    under until while our ours yours his her hers him she he it is am be do does did doing of to in on at
    by as or if an a so up no nor me my we us person persons years old lives living""".split()
)


@dataclass(frozen=True)
class SimSettings:
    first_bias: float = 0.0
    noise: float = 0.0
    fail_rate: float = 0.0
    malformed_rate: float = 0.0
    seed: int = 0


@dataclass(frozen=True)
class SimAnswer:
    text: str
    malformed: bool = False


def content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if len(w) > 2 and w not in STOPWORDS}


def request_rng(seed: int, *parts: str) -> random.Random:
    digest = hashlib.blake2b(digest_size=16)
    digest.update(str(seed).encode())
    for part in parts:
        digest.update(b"\x1f")
        digest.update(part.encode("utf-8", "surrogatepass"))
    return random.Random(int.from_bytes(digest.digest(), "big"))


def should_fail(settings: SimSettings, request_key: str, retry_count: str) -> bool:
    """Failures are drawn per attempt (the SDKs number their retries), so a retry can succeed."""
    if settings.fail_rate <= 0:
        return False
    return request_rng(settings.seed, "fail", request_key, retry_count).random() < settings.fail_rate


def _certainty(margin: float, rng: random.Random) -> int:
    # Grows with the margin in favour of the chosen answer; a choice against the evidence is unsure.
    value = 50 + 45 * math.tanh(margin / 3.0) + rng.uniform(-5, 5)
    return int(min(99, max(3, round(value))))


def answer(prompt: str, settings: SimSettings, request_key: str) -> SimAnswer:
    """Answer one judge prompt (all messages' text joined) as the simulated judge."""
    rng = request_rng(settings.seed, "answer", request_key)
    if rng.random() < settings.malformed_rate:
        return SimAnswer("Both responses have merits, and it is hard to say which one this user wants.", True)
    answers = _ANSWER.findall(prompt)
    if len(answers) < 2:
        return SimAnswer("I can only compare two answers given between [The Start/End of Assistant X's Answer] "
                         "markers.", True)
    (label_1, text_1), (label_2, text_2) = answers[0], answers[1]
    persona_match = _PERSONA.search(prompt)
    persona_words = content_words(persona_match.group(1)) if persona_match else set()
    fit_1 = len(content_words(text_1) & persona_words)
    fit_2 = len(content_words(text_2) & persona_words)
    margin = fit_1 - fit_2  # > 0: the first shown answer fits the persona better

    biased = rng.random() < settings.first_bias
    flipped = rng.random() < settings.noise
    if "Score of the Assistant 1" in prompt:
        return SimAnswer(_scores_answer(fit_1, fit_2, biased, flipped, rng))
    if margin == 0:
        prefers_first = rng.random() < 0.5
    else:
        prefers_first = margin > 0
    if flipped:
        prefers_first = not prefers_first
    chose_first = True if biased else prefers_first
    chosen_margin = margin if chose_first else -margin
    label = label_1 if chose_first else label_2
    if "[[C]]" in prompt:  # the tie template: no certainty
        if margin == 0 and not biased and not flipped:
            return SimAnswer("[[C]]")
        return SimAnswer(f"[[{label}]]")
    return SimAnswer(f"[[{label}]] [[{_certainty(chosen_margin, rng)}]]")


def _scores_answer(fit_1: int, fit_2: int, biased: bool, flipped: bool, rng: random.Random) -> str:
    score_1 = min(10.0, 5.0 + fit_1 * 1.0 + rng.choice([0.0, 0.5]))
    score_2 = min(10.0, 5.0 + fit_2 * 1.0 + rng.choice([0.0, 0.5]))
    if flipped:
        score_1, score_2 = score_2, score_1
    if biased:
        score_1 = min(10.0, max(score_1, score_2) + 1.0)
    return (
        "Evaluation evidence: Both assistants address the question. The better answer speaks more "
        "directly to the user's situation and needs.\n"
        f"Score of the Assistant 1: {score_1:g}\nScore of the Assistant 2: {score_2:g}"
    )
