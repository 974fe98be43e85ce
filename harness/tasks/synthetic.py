"""Offline TL;DR stand-in: synthetic forum posts, human-like references of varying quality, a gold reward.

Each post hides three key facts (who, what happened, what the poster asks) among filler and distractor sentences
that mention *other* people and events. A good summary names the three key facts, nothing else, briefly, and ends.
References are written like human TL;DRs: they often miss a fact, sometimes ramble or pick up a distractor, so the
SFT policy that imitates them leaves headroom that RL against an imperfect reward model can (partly) recover.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass

VERSION = 2  # bump when generated data change: cached presets built on them are then rebuilt
LABELLER_LENGTH_BIAS = 0.05  # per word: labellers lean toward longer summaries, which the gold reward penalises

SUBREDDITS = ["relationships", "AskReddit", "personalfinance", "relationship_advice", "tifu", "dating_advice",
              "legaladvice", "offmychest"]
WHO = ["my boyfriend", "my girlfriend", "my roommate", "my sister", "my brother", "my boss", "my best friend",
       "my mom", "my dad", "my coworker", "my neighbor", "my husband"]
EVENT = ["forgot my birthday", "borrowed money", "lied to me", "moved out", "got a new job", "adopted a dog",
         "stopped talking to me", "crashed my car", "started smoking", "quit college", "read my diary",
         "cancelled our trip"]
ASK = ["should i talk to them", "how do i move on", "am i overreacting", "what should i do", "should i forgive them",
       "how do i say no"]
FILLER = ["i am 24 and work in retail.", "we have known each other for five years.", "it was raining that day.",
          "i live in a small town.", "this has been on my mind all week.", "sorry for the long post.",
          "i usually do not post here.", "we met in high school.", "things were fine until recently.",
          "i tried to ignore it at first.", "my job keeps me busy most days.", "english is not my first language."]
REMARK = ["says it is not a big deal.", "thinks i am overreacting.", "told me to let it go.", "is on my side."]
RAMBLE = ["idk", "long story", "it is complicated", "anyway", "not sure what to think", "help"]


@dataclass(frozen=True)
class Facts:
    who: str
    event: str
    ask: str
    distractor_who: str
    distractor_event: str

    def key(self) -> list[str]:
        return [self.who, self.event, self.ask]


def sample_facts(rng: random.Random) -> Facts:
    who, d_who = rng.sample(WHO, 2)
    event, d_event = rng.sample(EVENT, 2)
    return Facts(who, event, rng.choice(ASK), d_who, d_event)


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def write_post(f: Facts, rng: random.Random) -> dict:
    """Forum-like post: key sentences in random places among filler and distractors."""
    key = rng.choice([f"so last week {f.who} {f.event}.", f"{f.who} {f.event} and i do not know how to feel.",
                      f"a few days ago {f.who} {f.event}."])
    ask = rng.choice([f"{f.ask}?", f"honestly, {f.ask}?", f"so {f.ask}?"])
    distractors = [f"{f.distractor_who} {rng.choice(REMARK)}",
                   rng.choice([f"{f.distractor_who} {f.distractor_event} last year, but that was different.",
                               f"once {f.distractor_who} {f.distractor_event} too."])]
    body = rng.sample(FILLER, rng.randint(1, 3)) + distractors[: rng.randint(1, 2)]
    rng.shuffle(body)
    body.insert(rng.randint(0, min(2, len(body))), key)
    sentences = body + [ask]
    title = rng.choice([f"{_cap(f.who)} {f.event}", f"Need advice about {f.who}", "Not sure what to do",
                        f"{_cap(f.who)} {f.event}, {f.ask}?"])
    return {"subreddit": rng.choice(SUBREDDITS), "title": title, "post": " ".join(_cap(s) for s in sentences)}


def write_summary(f: Facts, rng: random.Random, p_fact: float = 0.75, p_ask: float = 0.4, p_distract: float = 0.25,
                  p_ramble: float = 0.5) -> str:
    """A human-like TL;DR of varying quality (leading space, as in the real data)."""
    parts = []
    who = f.who if rng.random() < p_fact else rng.choice(["someone", "this person", "they"])
    if rng.random() < p_fact:
        parts.append(f"{who} {f.event}")
    else:
        parts.append(f"{who} did something" if rng.random() < 0.5 else who)
    if rng.random() < p_distract:
        parts.append(rng.choice([f"{f.distractor_who} {f.distractor_event}", f"{f.distractor_who} is involved"]))
    if rng.random() < p_ramble:
        parts.extend(rng.sample(RAMBLE, rng.randint(1, 3)))
    text = ", ".join(parts)
    if rng.random() < p_ask:
        text += f". {f.ask}?"
    else:
        text += "."
    return " " + text


def gold_reward(summary: str, f: Facts, terminated: bool = True) -> float:
    """Programmatic gold reward in about [-1.5, 1]: coverage of key facts minus wrong facts minus verbosity.

    A response that never ends (no EOS) gets -1, mirroring the reward model's missing-EOS rule.
    """
    if not terminated:
        return -1.0
    s = " ".join(summary.lower().split())
    coverage = sum(fact in s for fact in f.key()) / 3
    wrong = sum(w in s for w in WHO if w != f.who) + sum(e in s for e in EVENT if e != f.event)
    ideal_words = len(f"{f.who} {f.event}. {f.ask}?".split())
    verbosity = 0.04 * max(0, len(s.split()) - ideal_words - 1)
    return coverage - 0.5 * wrong - verbosity


def labeller_utility(summary: str, f: Facts) -> float:
    """What the simulated labellers prefer: the gold reward plus a bias toward length.

    This is what makes a reward model trained on the labels an imperfect proxy: it learns to like length, and a
    policy that over-optimises it starts to ramble while the gold reward goes down.
    """
    return gold_reward(summary, f) + LABELLER_LENGTH_BIAS * len(summary.split())


def bradley_terry_prob(r_a: float, r_b: float, temperature: float) -> float:
    return 1.0 / (1.0 + math.exp(-(r_a - r_b) / temperature))


BT_TEMPERATURE = 0.15  # the simulated labellers' Bradley-Terry temperature


class StandInGold:
    """The stand-in's gold reward as the backbone sees a task's gold (harness.examples.Gold): of an Example's facts."""

    def __call__(self, text: str, example, terminated: bool = True) -> float:
        return gold_reward(text, Facts(**example.facts), terminated=terminated)

    def preference(self, gold_a: float, gold_b: float) -> float:
        return bradley_terry_prob(gold_a, gold_b, BT_TEMPERATURE)


def generate(n: int, seed: int, bt_temperature: float = BT_TEMPERATURE) -> list[dict]:
    """n synthetic rows, each with the post, a reference summary, a gold-labelled preference pair and its facts."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        facts = sample_facts(rng)
        post = write_post(facts, rng)
        # Preference candidates span a wider quality range than the references, as the policies in the real data did.
        a, b = (write_summary(facts, rng, p_fact=rng.uniform(0.3, 0.95), p_ask=rng.uniform(0.2, 0.9),
                              p_distract=rng.uniform(0, 0.5), p_ramble=rng.uniform(0.2, 0.8)) for _ in range(2))
        p_a = bradley_terry_prob(labeller_utility(a, facts), labeller_utility(b, facts), bt_temperature)
        chosen, rejected = (a, b) if rng.random() < p_a else (b, a)
        rows.append({"id": f"synthetic-{seed}-{i}", **post, "summary": write_summary(facts, rng),
                     "chosen": chosen, "rejected": rejected,
                     "facts": {"who": facts.who, "event": facts.event, "ask": facts.ask,
                               "distractor_who": facts.distractor_who, "distractor_event": facts.distractor_event}})
    return rows


def facts_of(row: dict) -> Facts:
    return Facts(**row["facts"])
