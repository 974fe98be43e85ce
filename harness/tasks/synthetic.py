"""Offline TL;DR stand-in: synthetic forum posts, human-like references of varying quality, a gold reward.

Each post hides three key facts (who, what happened, what the poster asks) among filler and distractor sentences
that mention *other* people and events. A good summary names the three key facts, nothing else, briefly, and ends.
References are written like human TL;DRs: they often miss a fact, sometimes ramble or pick up a distractor, so the
SFT policy that imitates them leaves headroom that RL against an imperfect reward model can (partly) recover.

Two difficulty profiles (`generate(..., profile=)`): "standard" (the above; its rows are pinned by digests in
tests/test_tldr_task.py) and "hard": five key facts (who, event, when, where, ask) in longer posts with two
distractor people, a distractor time and a distractor place, so a summary must pick the right facts among similar
ones. The tiny preset saturates on "standard" within ~20 iterations; "hard" is meant to leave longer headroom.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, fields

VERSION = 2  # bump when generated data change: cached presets built on them are then rebuilt
# The hard profile's own version on top of VERSION (so changing it leaves standard builds and their keys alone).
# 2: preference candidates sometimes name a wrong person, event, time or place (`p_wrong`).
HARD_VERSION = 2
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
# The hard profile's extra fact pools. No value is a substring of another value, of a WHO/EVENT value or of a
# filler sentence: the gold reward finds facts by substring, so an overlap would count one fact as another.
WHEN = ["last month", "two days ago", "on new year's eve", "last weekend", "yesterday", "three weeks ago",
        "over the summer", "on thanksgiving", "this morning", "in january"]
WHERE = ["at work", "at a party", "at my parents' house", "at the gym", "at a wedding", "at school", "at the airport",
         "on vacation", "at dinner", "at the mall"]
HARD_FILLER = FILLER + ["i have been thinking about this a lot.", "we still text most days.",
                        "money has been tight lately.", "i do not want to make things worse.",
                        "my therapist is away this month.", "i know this sounds petty."]
PROFILES = ("standard", "hard")


@dataclass(frozen=True)
class Facts:
    """An example's facts. The fields after distractor_event belong to the hard profile: empty ("") on standard
    rows, whose facts dicts never carry them (rows written before they existed load unchanged)."""
    who: str
    event: str
    ask: str
    distractor_who: str
    distractor_event: str
    when: str = ""
    where: str = ""
    distractor_who2: str = ""
    distractor_event2: str = ""
    distractor_when: str = ""
    distractor_where: str = ""

    def key(self) -> list[str]:
        """The facts a good summary names: who, event, (when, where,) ask."""
        return [fact for fact in (self.who, self.event, self.when, self.where, self.ask) if fact]

    def as_row(self) -> dict:
        """The row's "facts" dict: the set fields only, so a standard row keeps its five keys."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name)}

    @property
    def profile(self) -> str:
        return "hard" if self.when else "standard"


def ideal_summary(f: Facts) -> str:
    """All key facts, nothing else (leading space, as a response is held): the gold reward's length yardstick."""
    return " " + " ".join(x for x in (f.who, f.event, f.where, f.when) if x) + f". {f.ask}?"


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
    key = f.key()
    coverage = sum(fact in s for fact in key) / len(key)
    wrong = sum(value in s for pool, right in _fact_pools(f) for value in pool if value != right)
    ideal_words = len(ideal_summary(f).split())
    verbosity = 0.04 * max(0, len(s.split()) - ideal_words - 1)
    return coverage - 0.5 * wrong - verbosity


def _fact_pools(f: Facts) -> list[tuple[list[str], str]]:
    """(pool, right value) of each fact kind a summary can get wrong; when/where only where the example has them."""
    pools = [(WHO, f.who), (EVENT, f.event)]
    return pools + [(pool, right) for pool, right in ((WHEN, f.when), (WHERE, f.where)) if right]


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
    """The stand-in's gold reward as the backbone sees a task's gold (harness.core.examples.Gold): of an Example's facts."""

    def __call__(self, text: str, example, terminated: bool = True) -> float:
        return gold_reward(text, Facts(**example.facts), terminated=terminated)

    def preference(self, gold_a: float, gold_b: float) -> float:
        return bradley_terry_prob(gold_a, gold_b, BT_TEMPERATURE)


def data_version(profile: str) -> int | str:
    """What a build's cache key records about the generated data of `profile`: VERSION alone for standard posts
    (the key they always had), VERSION and HARD_VERSION for hard ones."""
    return VERSION if profile == "standard" else f"{VERSION}.hard{HARD_VERSION}"


def generate(n: int, seed: int, bt_temperature: float = BT_TEMPERATURE, profile: str = "standard") -> list[dict]:
    """n synthetic rows of a profile ("standard" or "hard"), each with the post, a reference summary, a gold-labelled
    preference pair and its facts."""
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {', '.join(PROFILES)}, got {profile!r}")
    sample, post_of, summary_of = ((sample_facts, write_post, write_summary) if profile == "standard" else
                                   (sample_hard_facts, write_hard_post, write_hard_summary))
    prefix = "synthetic" if profile == "standard" else f"synthetic-{profile}"
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        facts = sample(rng)
        post = post_of(facts, rng)
        # Preference candidates span a wider quality range than the references, as the policies in the real data did;
        # on hard posts they also get facts wrong, as a policy does, so a reward model can learn that it matters.
        wrong = {"p_wrong": rng.uniform(0.1, 0.6)} if profile == "hard" else {}
        a, b = (summary_of(facts, rng, p_fact=rng.uniform(0.3, 0.95), p_ask=rng.uniform(0.2, 0.9),
                           p_distract=rng.uniform(0, 0.5), p_ramble=rng.uniform(0.2, 0.8), **wrong) for _ in range(2))
        p_a = bradley_terry_prob(labeller_utility(a, facts), labeller_utility(b, facts), bt_temperature)
        chosen, rejected = (a, b) if rng.random() < p_a else (b, a)
        rows.append({"id": f"{prefix}-{seed}-{i}", **post, "summary": summary_of(facts, rng),
                     "chosen": chosen, "rejected": rejected, "facts": facts.as_row()})
    return rows


# ---------------------------------------------------------------------------------------------------------------
# The hard profile: five key facts, two distractor people, a distractor time and place, longer posts.

def sample_hard_facts(rng: random.Random) -> Facts:
    who, d_who, d_who2 = rng.sample(WHO, 3)
    event, d_event, d_event2 = rng.sample(EVENT, 3)
    when, d_when = rng.sample(WHEN, 2)
    where, d_where = rng.sample(WHERE, 2)
    return Facts(who, event, rng.choice(ASK), d_who, d_event, when=when, where=where, distractor_who2=d_who2,
                 distractor_event2=d_event2, distractor_when=d_when, distractor_where=d_where)


def _hard_key_sentences(f: Facts, rng: random.Random) -> list[str]:
    """Who, event, when and where: in one sentence, or the place in a sentence of its own (to be placed apart)."""
    together = [f"{f.when} {f.who} {f.event} {f.where}.", f"{f.who} {f.event} {f.where} {f.when} and i do not know "
                f"how to feel.", f"{f.when}, {f.where}, {f.who} {f.event}."]
    apart = [f"so {f.when} {f.who} {f.event}.", f"{f.who} {f.event} {f.when}, out of nowhere."]
    if rng.random() < 0.5:
        return [rng.choice(together)]
    return [rng.choice(apart), rng.choice([f"it happened {f.where}.", f"we were {f.where} when it happened."])]


def _hard_distractors(f: Facts, rng: random.Random) -> list[str]:
    """Both distractor people with their own events, one with the distractor time, one with the distractor place,
    and 0-2 remarks: the same kinds of facts as the key ones, so naming the right ones takes reading."""
    first = rng.choice([f"{f.distractor_who} {f.distractor_event} {f.distractor_when}, but that was different.",
                        f"{f.distractor_when} {f.distractor_who} {f.distractor_event} too.",
                        f"{f.distractor_who} {f.distractor_event} {f.distractor_when} and i got over it."])
    second = rng.choice([f"{f.distractor_who2} {f.distractor_event2} {f.distractor_where} once.",
                         f"{f.distractor_where} {f.distractor_who2} {f.distractor_event2}, which was worse.",
                         f"{f.distractor_who2} also {f.distractor_event2} {f.distractor_where}."])
    remarks = [f"{who} {rng.choice(REMARK)}" for who in (f.distractor_who, f.distractor_who2)]
    return [first, second] + rng.sample(remarks, rng.randint(0, 2))


def write_hard_post(f: Facts, rng: random.Random) -> dict:
    """A longer post: 3-6 filler sentences and the distractors, the key sentence(s) anywhere among them, the ask
    last."""
    body = rng.sample(HARD_FILLER, rng.randint(3, 6)) + _hard_distractors(f, rng)
    rng.shuffle(body)
    for sentence in _hard_key_sentences(f, rng):
        body.insert(rng.randint(0, len(body)), sentence)
    ask = rng.choice([f"{f.ask}?", f"honestly, {f.ask}?", f"so {f.ask}?"])
    title = rng.choice([f"{_cap(f.who)} {f.event}", f"Need advice about {f.who}", "Not sure what to do",
                        f"{_cap(f.who)} {f.event} {f.when}", "Long post, need advice"])
    return {"subreddit": rng.choice(SUBREDDITS), "title": title, "post": " ".join(_cap(s) for s in body + [ask])}


def _wrong(right: str, in_post: list[str], pool: list[str], rng: random.Random) -> str:
    """A wrong value for a fact: half the time one the post mentions for someone else, else any other of its pool."""
    return rng.choice(in_post) if rng.random() < 0.5 else rng.choice([v for v in pool if v != right])


def write_hard_summary(f: Facts, rng: random.Random, p_fact: float = 0.75, p_ask: float = 0.4,
                       p_distract: float = 0.25, p_ramble: float = 0.5, p_detail: float | None = None,
                       p_wrong: float = 0.0) -> str:
    """A human-like TL;DR of a hard post: as `write_summary`, and the place and time each kept with p_detail
    (default two thirds of p_fact: people leave the circumstances out more often than who and what). With p_wrong
    > 0 (preference candidates only), each named person, event, place and time is a wrong one with that
    probability; with 0 no random number is drawn for it."""
    p_detail = 2 * p_fact / 3 if p_detail is None else p_detail

    def fact(right: str, in_post: list[str], pool: list[str]) -> str:
        return _wrong(right, in_post, pool, rng) if p_wrong and rng.random() < p_wrong else right

    who = (fact(f.who, [f.distractor_who, f.distractor_who2], WHO) if rng.random() < p_fact
           else rng.choice(["someone", "this person", "they"]))
    event = fact(f.event, [f.distractor_event, f.distractor_event2], EVENT)
    head = f"{who} {event}" if rng.random() < p_fact else f"{who} did something" if rng.random() < 0.5 else who
    details = [fact(right, [wrong], pool) for right, wrong, pool in
               ((f.where, f.distractor_where, WHERE), (f.when, f.distractor_when, WHEN)) if rng.random() < p_detail]
    parts = [" ".join([head, *details])]
    if rng.random() < p_distract:
        parts.append(rng.choice([f"{f.distractor_who} {f.distractor_event}",
                                 f"{f.distractor_who2} {f.distractor_event2}",
                                 f"{f.distractor_who2} {f.distractor_event2} {f.distractor_where}",
                                 f"{f.distractor_who} is involved"]))
    if rng.random() < p_ramble:
        parts.extend(rng.sample(RAMBLE, rng.randint(1, 3)))
    text = ", ".join(parts)
    return " " + text + (f". {f.ask}?" if rng.random() < p_ask else ".")


def facts_of(row: dict) -> Facts:
    return Facts(**row["facts"])
