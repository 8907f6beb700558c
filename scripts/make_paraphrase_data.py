"""Deterministic generator for the workshop's small offline paraphrase dataset.

The workshop must run without network access, so it ships a tiny sentence-pair
task that is produced entirely by the code in this module:

* ``data/paraphrase/{train,validation}.tsv`` -- a sentence-pair paraphrase task
  in the style of GLUE MRPC (``label<TAB>sentence1<TAB>sentence2``).  Positive
  pairs (label 1) describe the same fictional event in different words;
  negative pairs (label 0) mostly share many of their words but differ in one
  or two facts: a number, a name, a date, a direction, a negation or who did
  what to whom (a few are simply a different event of the same kind).

(The instruction-tuning set, ``data/medquad``, is real MedQuAD text and is built
by ``scripts/build_medquad.py``, not here.)

Everything is driven by ``random.Random(seed)`` instances (never the global
random state, never iteration over sets), so the same seed always produces
byte-identical files.  Regenerate the committed files with::

    python scripts/make_paraphrase_data.py            # writes <repo>/data
    python scripts/make_paraphrase_data.py OUT_DIR    # writes somewhere else

It is a build-time script, not part of the ``workshop_utils`` package the notebooks import: attendees use
the committed files, and ``tests/data/test_datagen.py`` checks that this script still writes them byte for byte.

All names of companies, people, teams, apps and telescopes below are invented
for this dataset, and the events they take part in are fictional.
"""

from __future__ import annotations

import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

__all__ = [
    "PARAPHRASE_COLUMNS",
    "PARAPHRASE_SIZES",
    "make_paraphrase_pairs",
    "write_paraphrase_tsv",
    "write_all",
]

# --------------------------------------------------------------------------- #
# Shared helpers
# --------------------------------------------------------------------------- #

_SMALL = (
    "zero one two three four five six seven eight nine ten eleven twelve "
    "thirteen fourteen fifteen sixteen seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_words(n: int) -> str:
    """Spell out an integer between 0 and 99 ("42" -> "forty-two")."""
    if not 0 <= n < 100:
        raise ValueError(f"number_words only handles 0..99, got {n}")
    if n < 20:
        return _SMALL[n]
    tens, ones = divmod(n, 10)
    return _TENS[tens] if ones == 0 else f"{_TENS[tens]}-{_SMALL[ones]}"


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _other(rng: random.Random, pool, current):
    """Pick an element of ``pool`` different from ``current``."""
    choices = [x for x in pool if x != current]
    return rng.choice(choices)


def _shift_int(rng: random.Random, value: int, lo: int, hi: int) -> int:
    """A clearly different integer in [lo, hi] (at least ~20% away)."""
    gap = max(1, round(value * 0.2))
    choices = [x for x in range(lo, hi + 1) if abs(x - value) >= gap]
    return rng.choice(choices)


def _fmt_count(n: int, rng: random.Random, words_p: float = 0.3) -> str:
    if n < 100 and rng.random() < words_p:
        return number_words(n)
    return f"{n:,}"


def _fmt_pct(p: int, rng: random.Random) -> str:
    options = [f"{p} percent", f"{p} percent", f"{p}%"]
    if p < 100:
        options.append(f"{number_words(p)} percent")
    return rng.choice(options)


def _tenths_str(tenths: int) -> str:
    whole, frac = divmod(tenths, 10)
    return str(whole) if frac == 0 else f"{whole}.{frac}"


def _fmt_money(tenths: int, scale: str, rng: random.Random) -> str:
    """Format an amount given in tenths of a million/billion dollars."""
    num = _tenths_str(tenths)
    options = [f"${num} {scale}", f"${num} {scale}", f"{num} {scale} dollars"]
    if tenths % 10 == 0 and tenths // 10 < 100:
        options.append(f"{number_words(tenths // 10)} {scale} dollars")
    if scale == "million":
        options.append(f"${tenths * 100_000:,}")
    return rng.choice(options)


def _money_attr(tenths: int, scale: str) -> str:
    """Money used as a modifier ("a $2.5 billion deal")."""
    return f"${_tenths_str(tenths)} {scale}"


def _fmt_scaled_count(tenths: int, rng: random.Random) -> str:
    """Format a count given in tenths of a million ("2.5 million")."""
    num = _tenths_str(tenths)
    options = [f"{num} million", f"{num} million", f"{tenths * 100_000:,}"]
    if tenths % 10 == 0 and tenths // 10 < 100:
        options.append(f"{number_words(tenths // 10)} million")
    return rng.choice(options)


def _fmt_score(a: int, b: int, rng: random.Random) -> str:
    return rng.choice([f"{a}-{b}", f"{a}-{b}", f"{a} to {b}"])


def _on_day(day: str, rng: random.Random) -> str:
    return rng.choice([f"on {day}", day])


# --------------------------------------------------------------------------- #
# Invented entities
# --------------------------------------------------------------------------- #

_COMPANY_HEADS = (
    "Alder Bluefield Crestline Dunmore Eastgate Fairhaven Granite Harlow "
    "Ironwood Juniper Kestrel Larkspur Meridian Northwind Oakridge Pinecrest "
    "Quarry Redstone Silverline Tamarack Upland Vantage Westbrook Yarrow"
).split()
_COMPANY_TAILS = (
    "Systems Foods Energy Holdings Motors Pharmaceuticals Airlines Bank "
    "Logistics Software Retail Mining Telecom Insurance"
).split()
COMPANIES = [f"{h} {t}" for h in _COMPANY_HEADS for t in _COMPANY_TAILS]

_FIRST = (
    "Ana Ben Carla David Elena Farid Grace Hiro Irene Jamal Karin Luis Maya "
    "Nikolai Olivia Pedro Quinn Rosa Samir Tessa Umar Vera Wesley Yuki Zara"
).split()
_LAST = (
    "Abbott Brennan Castillo Dalton Ekwueme Fischer Garcia Haddad Ito Jensen "
    "Kowalski Lindqvist Moreau Novak Okafor Petrov Quintero Rahman Sato "
    "Tanaka Uribe Varga Whitfield Yilmaz Zeller"
).split()
PEOPLE = [f"{f} {l}" for f in _FIRST for l in _LAST]

CITIES = (
    "Denver|Portland|Leeds|Lyon|Osaka|Austin|Tampa|Oslo|Calgary|Adelaide|"
    "Nairobi|Porto|Madison|Omaha|Boise|Halifax|Glasgow|Bremen|Tucson|Raleigh|"
    "Dayton|Wichita|Perth|Cork|Toledo|Spokane|Fresno|Memphis|Bergen|Malaga"
).split("|")
_MASCOTS = (
    "Hawks Rangers Comets Lions Pioneers Falcons Miners Wolves Rovers "
    "Tigers Mariners Bears Foxes Stallions"
).split()
TEAMS = [f"{c} {m}" for c in CITIES for m in _MASCOTS]

DAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
MONTHS = (
    "January February March April May June July August September October "
    "November December"
).split()

_UP_VERBS = ["rose", "climbed", "increased", "grew"]
_DOWN_VERBS = ["fell", "dropped", "declined", "slipped"]
_UP_NOUNS = ["increase", "rise", "gain"]
_DOWN_NOUNS = ["decline", "drop", "fall"]


def _move_verb(up: bool, rng: random.Random) -> str:
    return rng.choice(_UP_VERBS if up else _DOWN_VERBS)


def _move_noun(up: bool, rng: random.Random) -> str:
    return rng.choice(_UP_NOUNS if up else _DOWN_NOUNS)


# --------------------------------------------------------------------------- #
# Event frames for the paraphrase task
# --------------------------------------------------------------------------- #

Slots = dict
Renderer = Callable[[Slots, random.Random], str]
Perturbation = Callable[[Slots, random.Random], Slots]


@dataclass(frozen=True)
class Frame:
    """One kind of event: how to sample it, say it, and change its meaning.

    Every renderer must express *all* slots, so two renderings of the same
    slots are paraphrases, while a rendering of perturbed slots is not.
    """

    name: str
    domain: str
    sample: Callable[[random.Random], Slots]
    renderers: tuple[Renderer, ...]
    perturbations: tuple[Perturbation, ...]


def _replace(slots: Slots, **changes) -> Slots:
    new = dict(slots)
    new.update(changes)
    return new


# -- business: quarterly results --------------------------------------------
_PERIODS = ["quarterly", "annual", "first-quarter", "second-quarter",
            "third-quarter", "fourth-quarter"]
_METRICS = ["profit", "revenue", "sales", "net income"]


def _earnings_sample(rng):
    return {
        "co": rng.choice(COMPANIES), "period": rng.choice(_PERIODS),
        "metric": rng.choice(_METRICS), "up": rng.random() < 0.6,
        "pct": rng.randint(2, 45), "amt": rng.randint(15, 9000),
        "day": rng.choice(DAYS[:5]),
    }


def _earnings_r0(s, rng):
    return (f"{s['co']} said {_on_day(s['day'], rng)} its {s['period']} "
            f"{s['metric']} {_move_verb(s['up'], rng)} {_fmt_pct(s['pct'], rng)} "
            f"to {_fmt_money(s['amt'], 'million', rng)}.")


def _earnings_r1(s, rng):
    return (f"{_cap(s['period'])} {s['metric']} at {s['co']} "
            f"{_move_verb(s['up'], rng)} {_fmt_pct(s['pct'], rng)} to "
            f"{_fmt_money(s['amt'], 'million', rng)}, the company said "
            f"{_on_day(s['day'], rng)}.")


def _earnings_r2(s, rng):
    return (f"On {s['day']}, {s['co']} reported a {_fmt_pct(s['pct'], rng)} "
            f"{_move_noun(s['up'], rng)} in {s['period']} {s['metric']}, to "
            f"{_fmt_money(s['amt'], 'million', rng)}.")


def _earnings_r3(s, rng):
    return (f"\"Our {s['period']} {s['metric']} {_move_verb(s['up'], rng)} "
            f"{_fmt_pct(s['pct'], rng)} to {_fmt_money(s['amt'], 'million', rng)},\" "
            f"{s['co']} said in a statement {_on_day(s['day'], rng)}.")


EARNINGS = Frame(
    "earnings", "business", _earnings_sample,
    (_earnings_r0, _earnings_r1, _earnings_r2, _earnings_r3),
    (
        lambda s, rng: _replace(s, up=not s["up"]),
        lambda s, rng: _replace(s, pct=_shift_int(rng, s["pct"], 2, 60)),
        lambda s, rng: _replace(s, amt=_shift_int(rng, s["amt"], 15, 9000)),
        lambda s, rng: _replace(s, co=_other(rng, COMPANIES, s["co"])),
        lambda s, rng: _replace(s, period=_other(rng, _PERIODS, s["period"])),
        lambda s, rng: _replace(s, day=_other(rng, DAYS[:5], s["day"])),
    ),
)


# -- business: acquisitions -------------------------------------------------
def _deal_sample(rng):
    buyer, target = rng.sample(COMPANIES, 2)
    return {"buyer": buyer, "target": target, "amt": rng.randint(3, 400),
            "day": rng.choice(DAYS[:5]), "neg": False}


def _deal_r0(s, rng):
    verb = rng.choice(["buy", "acquire", "purchase"])
    if s["neg"]:
        return (f"{s['buyer']} said {_on_day(s['day'], rng)} it would not {verb} "
                f"{s['target']} for {_fmt_money(s['amt'], 'billion', rng)}.")
    return (f"{s['buyer']} agreed {_on_day(s['day'], rng)} to {verb} "
            f"{s['target']} for {_fmt_money(s['amt'], 'billion', rng)}.")


def _deal_r1(s, rng):
    will = "will not" if s["neg"] else "will"
    return (f"{s['target']} {will} be acquired by {s['buyer']} for "
            f"{_fmt_money(s['amt'], 'billion', rng)}, the companies said "
            f"{_on_day(s['day'], rng)}.")


def _deal_r2(s, rng):
    if s["neg"]:
        return (f"On {s['day']}, {s['buyer']} ruled out a "
                f"{_money_attr(s['amt'], 'billion')} purchase of {s['target']}.")
    return (f"In a deal valued at {_fmt_money(s['amt'], 'billion', rng)}, "
            f"{s['buyer']} has agreed to buy {s['target']}, the companies "
            f"announced {_on_day(s['day'], rng)}.")


def _deal_r3(s, rng):
    quote = "We are not going to buy" if s["neg"] else "We have agreed to buy"
    return (f"\"{quote} {s['target']},\" {s['buyer']} said {_on_day(s['day'], rng)} "
            f"of the {_money_attr(s['amt'], 'billion')} deal.")


DEAL = Frame(
    "acquisition", "business", _deal_sample,
    (_deal_r0, _deal_r1, _deal_r2, _deal_r3),
    (
        lambda s, rng: _replace(s, buyer=s["target"], target=s["buyer"]),
        lambda s, rng: _replace(s, amt=_shift_int(rng, s["amt"], 3, 400)),
        lambda s, rng: _replace(s, target=_other(rng, COMPANIES, s["target"])),
        lambda s, rng: _replace(s, neg=True),
        lambda s, rng: _replace(s, day=_other(rng, DAYS[:5], s["day"])),
    ),
)


# -- business: share prices -------------------------------------------------
_SESSIONS = ["in early trading", "in afternoon trading", "in late trading"]


def _stock_sample(rng):
    return {"co": rng.choice(COMPANIES), "up": rng.random() < 0.5,
            "pct": rng.randint(2, 30), "cents": rng.randint(300, 25000),
            "when": rng.choice(_SESSIONS)}


def _price(cents: int) -> str:
    return f"${cents // 100}.{cents % 100:02d}"


def _stock_r0(s, rng):
    return (f"Shares of {s['co']} {_move_verb(s['up'], rng)} "
            f"{_fmt_pct(s['pct'], rng)} to {_price(s['cents'])} {s['when']}.")


def _stock_r1(s, rng):
    return (f"{_cap(s['when'])}, {s['co']} shares {_move_verb(s['up'], rng)} "
            f"{_fmt_pct(s['pct'], rng)}, to {_price(s['cents'])}.")


def _stock_r2(s, rng):
    direction = "up" if s["up"] else "down"
    return (f"{s['co']} stock was {direction} {_fmt_pct(s['pct'], rng)} at "
            f"{_price(s['cents'])} a share {s['when']}.")


STOCK = Frame(
    "stock", "business", _stock_sample,
    (_stock_r0, _stock_r1, _stock_r2),
    (
        lambda s, rng: _replace(s, up=not s["up"]),
        lambda s, rng: _replace(s, pct=_shift_int(rng, s["pct"], 2, 40)),
        lambda s, rng: _replace(s, cents=_shift_int(rng, s["cents"], 300, 25000)),
        lambda s, rng: _replace(s, co=_other(rng, COMPANIES, s["co"])),
        lambda s, rng: _replace(s, when=_other(rng, _SESSIONS, s["when"])),
    ),
)


# -- business: jobs ---------------------------------------------------------
def _jobs_sample(rng):
    return {"co": rng.choice(COMPANIES), "cut": rng.random() < 0.5,
            "n": rng.choice(range(50, 5001, 50)), "city": rng.choice(CITIES),
            "years": rng.randint(2, 5)}


def _jobs_r0(s, rng):
    verb = rng.choice(["cut", "eliminate"]) if s["cut"] else rng.choice(["add", "create"])
    return (f"{s['co']} said it would {verb} {s['n']:,} jobs in {s['city']} "
            f"over the next {_fmt_count(s['years'], rng, 0.6)} years.")


def _jobs_r1(s, rng):
    verb = rng.choice(["cut", "eliminated"]) if s["cut"] else rng.choice(["added", "created"])
    return (f"Over the next {_fmt_count(s['years'], rng, 0.6)} years, {s['n']:,} "
            f"jobs in {s['city']} will be {verb} by {s['co']}, the company said.")


def _jobs_r2(s, rng):
    noun = "reduce its workforce" if s["cut"] else "expand its workforce"
    return (f"{s['co']} plans to {noun} in {s['city']} by {s['n']:,} positions "
            f"over the next {_fmt_count(s['years'], rng, 0.6)} years.")


def _jobs_r3(s, rng):
    verb = "cut" if s["cut"] else "add"
    return (f"\"We will {verb} {s['n']:,} jobs in {s['city']} over the next "
            f"{_fmt_count(s['years'], rng, 0.6)} years,\" a {s['co']} spokesperson said.")


JOBS = Frame(
    "jobs", "business", _jobs_sample,
    (_jobs_r0, _jobs_r1, _jobs_r2, _jobs_r3),
    (
        lambda s, rng: _replace(s, cut=not s["cut"]),
        lambda s, rng: _replace(s, n=_shift_int(rng, s["n"] // 50, 1, 100) * 50),
        lambda s, rng: _replace(s, city=_other(rng, CITIES, s["city"])),
        lambda s, rng: _replace(s, years=_other(rng, range(2, 8), s["years"])),
    ),
)


# -- sports: match results --------------------------------------------------
def _match_sample(rng):
    a, b = rng.sample(TEAMS, 2)
    if rng.random() < 0.5:  # soccer / hockey style scores
        lose = rng.randint(0, 3)
        win = lose + rng.randint(1, 3)
    else:  # basketball style scores
        lose = rng.randint(80, 115)
        win = lose + rng.randint(1, 20)
    return {"a": a, "b": b, "win": win, "lose": lose, "day": rng.choice(DAYS)}


def _match_r0(s, rng):
    verb = rng.choice(["beat", "defeated"])
    return (f"The {s['a']} {verb} the {s['b']} {_fmt_score(s['win'], s['lose'], rng)} "
            f"{_on_day(s['day'], rng)}.")


def _match_r1(s, rng):
    return (f"The {s['b']} lost {_fmt_score(s['win'], s['lose'], rng)} to the "
            f"{s['a']} {_on_day(s['day'], rng)}.")


def _match_r2(s, rng):
    return (f"On {s['day']}, the {s['a']} {rng.choice(['beat', 'defeated'])} the "
            f"{s['b']} by a score of {s['win']} to {s['lose']}.")


def _match_r3(s, rng):
    noun = rng.choice(["win", "victory"])
    return (f"The {s['a']} earned a {_fmt_score(s['win'], s['lose'], rng)} {noun} "
            f"over the {s['b']} {_on_day(s['day'], rng)}.")


def _match_score_change(s, rng):
    if s["win"] >= 50:
        lose = _other(rng, range(80, 116), s["lose"])
        return _replace(s, lose=lose, win=lose + rng.randint(1, 20))
    lose = rng.randint(0, 3)
    win = _other(rng, range(lose + 1, lose + 4), s["win"]) if lose == s["lose"] \
        else lose + rng.randint(1, 3)
    return _replace(s, win=win, lose=lose)


MATCH = Frame(
    "match", "sports", _match_sample,
    (_match_r0, _match_r1, _match_r2, _match_r3),
    (
        lambda s, rng: _replace(s, a=s["b"], b=s["a"]),
        _match_score_change,
        lambda s, rng: _replace(s, b=_other(rng, TEAMS, s["b"])),
        lambda s, rng: _replace(s, day=_other(rng, DAYS, s["day"])),
    ),
)


# -- sports: contracts ------------------------------------------------------
def _contract_sample(rng):
    return {"team": rng.choice(TEAMS), "player": rng.choice(PEOPLE),
            "years": rng.randint(2, 7), "amt": rng.randint(20, 2400)}


def _years_adj(years: int, rng: random.Random) -> str:
    return f"{_fmt_count(years, rng, 0.5)}-year"


def _contract_r0(s, rng):
    return (f"The {s['team']} signed {s['player']} to a {_years_adj(s['years'], rng)} "
            f"contract worth {_fmt_money(s['amt'], 'million', rng)}.")


def _contract_r1(s, rng):
    return (f"{s['player']} agreed to a {_years_adj(s['years'], rng)}, "
            f"{_fmt_money(s['amt'], 'million', rng)} deal with the {s['team']}.")


def _contract_r2(s, rng):
    return (f"{s['player']} has signed a {_years_adj(s['years'], rng)} deal worth "
            f"{_fmt_money(s['amt'], 'million', rng)} with the {s['team']}.")


def _contract_r3(s, rng):
    return (f"\"I'm thrilled to be joining the {s['team']},\" said {s['player']}, "
            f"who signed a {_years_adj(s['years'], rng)} contract worth "
            f"{_fmt_money(s['amt'], 'million', rng)}.")


CONTRACT = Frame(
    "contract", "sports", _contract_sample,
    (_contract_r0, _contract_r1, _contract_r2, _contract_r3),
    (
        lambda s, rng: _replace(s, years=_other(rng, range(2, 8), s["years"])),
        lambda s, rng: _replace(s, amt=_shift_int(rng, s["amt"], 20, 2400)),
        lambda s, rng: _replace(s, team=_other(rng, TEAMS, s["team"])),
        lambda s, rng: _replace(s, player=_other(rng, PEOPLE, s["player"])),
    ),
)


# -- sports: individual scoring ---------------------------------------------
def _scorer_sample(rng):
    team, opp = rng.sample(TEAMS, 2)
    return {"player": rng.choice(PEOPLE), "team": team, "opp": opp,
            "pts": rng.randint(12, 52)}


def _scorer_r0(s, rng):
    return (f"{s['player']} scored {_fmt_count(s['pts'], rng)} points to lead the "
            f"{s['team']} past the {s['opp']}.")


def _scorer_r1(s, rng):
    return (f"The {s['team']} beat the {s['opp']} behind "
            f"{_fmt_count(s['pts'], rng)} points from {s['player']}.")


def _scorer_r2(s, rng):
    return (f"With {_fmt_count(s['pts'], rng)} points from {s['player']}, the "
            f"{s['team']} {rng.choice(['defeated', 'beat'])} the {s['opp']}.")


SCORER = Frame(
    "scorer", "sports", _scorer_sample,
    (_scorer_r0, _scorer_r1, _scorer_r2),
    (
        lambda s, rng: _replace(s, team=s["opp"], opp=s["team"]),
        lambda s, rng: _replace(s, pts=_shift_int(rng, s["pts"], 8, 60)),
        lambda s, rng: _replace(s, player=_other(rng, PEOPLE, s["player"])),
    ),
)


# -- science: observational studies -----------------------------------------
# (noun phrase, "people who ..." phrase, lowers risk?)
_EXPOSURES = [
    ("regular exercise", "exercised regularly", True),
    ("eating more fiber", "ate more fiber", True),
    ("getting at least seven hours of sleep", "slept at least seven hours a night", True),
    ("daily walking", "walked every day", True),
    ("eating fresh vegetables", "ate fresh vegetables", True),
    ("smoking", "smoked", False),
    ("drinking sugary sodas", "drank sugary sodas", False),
    ("long periods of sitting", "sat for long periods", False),
    ("heavy drinking", "drank heavily", False),
    ("chronic stress", "lived with chronic stress", False),
]
_CONDITIONS = ["heart disease", "type 2 diabetes", "depression", "stroke",
               "dementia", "high blood pressure", "kidney disease", "asthma",
               "obesity", "back pain"]
_INSTITUTES = [f"the University of {c}" for c in CITIES[:16]] + \
    [f"the {h} Institute" for h in _COMPANY_HEADS[:12]]


def _study_sample(rng):
    noun, who, lowers = rng.choice(_EXPOSURES)
    return {"noun": noun, "who": who, "lower": lowers,
            "cond": rng.choice(_CONDITIONS), "pct": rng.randint(10, 60),
            "inst": rng.choice(_INSTITUTES)}


def _study_r0(s, rng):
    verb = rng.choice(["lowered", "reduced", "cut"]) if s["lower"] else \
        rng.choice(["raised", "increased"])
    return (f"Researchers at {s['inst']} found that {s['noun']} {verb} the risk of "
            f"{s['cond']} by {_fmt_pct(s['pct'], rng)}.")


def _study_r1(s, rng):
    verb = rng.choice(["lowers", "reduces", "cuts"]) if s["lower"] else \
        rng.choice(["raises", "increases"])
    return (f"{_cap(s['noun'])} {verb} the risk of {s['cond']} by "
            f"{_fmt_pct(s['pct'], rng)}, according to a study by researchers "
            f"at {s['inst']}.")


def _study_r2(s, rng):
    comp = "lower" if s["lower"] else "higher"
    return (f"A study from {s['inst']} reports that people who {s['who']} had a "
            f"{_fmt_pct(s['pct'], rng)} {comp} risk of {s['cond']}.")


def _study_r3(s, rng):
    comp = "lower" if s["lower"] else "higher"
    return (f"According to scientists at {s['inst']}, the risk of {s['cond']} was "
            f"{_fmt_pct(s['pct'], rng)} {comp} among people who {s['who']}.")


STUDY = Frame(
    "study", "science", _study_sample,
    (_study_r0, _study_r1, _study_r2, _study_r3),
    (
        lambda s, rng: _replace(s, lower=not s["lower"]),
        lambda s, rng: _replace(s, pct=_shift_int(rng, s["pct"], 5, 70)),
        lambda s, rng: _replace(s, cond=_other(rng, _CONDITIONS, s["cond"])),
        lambda s, rng: _replace(s, inst=_other(rng, _INSTITUTES, s["inst"])),
    ),
)


# -- science: astronomy -----------------------------------------------------
_TELESCOPES = [f"{n} {k}" for n in
               "Aurora Beacon Condor Halcyon Lumen Sentinel Vireo Zephyr".split()
               for k in ("Space Telescope", "Observatory")]
_SKY_OBJECTS = ["planets", "comets", "asteroids", "galaxies", "star clusters",
                "brown dwarfs"]


def _astro_sample(rng):
    return {"tel": rng.choice(_TELESCOPES), "n": rng.randint(3, 90),
            "obj": rng.choice(_SKY_OBJECTS), "ly": rng.choice(range(40, 2001, 10))}


def _astro_r0(s, rng):
    return (f"Astronomers using the {s['tel']} have discovered "
            f"{_fmt_count(s['n'], rng)} new {s['obj']} about {s['ly']:,} "
            f"light-years from Earth.")


def _astro_r1(s, rng):
    return (f"{_cap(_fmt_count(s['n'], rng))} new {s['obj']} about {s['ly']:,} "
            f"light-years from Earth have been discovered by astronomers using "
            f"the {s['tel']}.")


def _astro_r2(s, rng):
    return (f"The {s['tel']} has helped astronomers find "
            f"{_fmt_count(s['n'], rng)} previously unknown {s['obj']} roughly "
            f"{s['ly']:,} light-years away.")


ASTRO = Frame(
    "astronomy", "science", _astro_sample,
    (_astro_r0, _astro_r1, _astro_r2),
    (
        lambda s, rng: _replace(s, n=_shift_int(rng, s["n"], 3, 99)),
        lambda s, rng: _replace(s, obj=_other(rng, _SKY_OBJECTS, s["obj"])),
        lambda s, rng: _replace(s, ly=_shift_int(rng, s["ly"] // 10, 4, 200) * 10),
        lambda s, rng: _replace(s, tel=_other(rng, _TELESCOPES, s["tel"])),
    ),
)


# -- politics: votes --------------------------------------------------------
_BODIES = [("the Senate", 100), ("the House", 435), ("the state Assembly", 80),
           ("the state Senate", 40), ("the city council", 13),
           ("the county board", 9)]
_BILLS = [
    "a bill to raise the minimum wage", "a measure to expand public transit",
    "a plan to cut property taxes", "a proposal to ban plastic bags",
    "a bill to fund new schools", "a measure to build more public housing",
    "a plan to repair the harbor bridge", "a bill to lower the voting age",
    "a proposal to extend library hours", "a measure to protect wetlands",
    "a bill to limit short-term rentals", "a plan to hire more firefighters",
]


def _vote_sample(rng):
    body, size = rng.choice(_BODIES)
    yes = rng.randint(size // 2 + 1, size - 1)
    no = rng.randint(1, size - yes)
    return {"body": body, "size": size, "yes": yes, "no": no,
            "approve": rng.random() < 0.7, "bill": rng.choice(_BILLS),
            "day": rng.choice(DAYS[:5])}


def _vote_r0(s, rng):
    verb = "approve" if s["approve"] else rng.choice(["reject", "block"])
    return (f"{_cap(s['body'])} voted {_fmt_score(s['yes'], s['no'], rng)} "
            f"{_on_day(s['day'], rng)} to {verb} {s['bill']}.")


def _vote_r1(s, rng):
    verb = rng.choice(["approved", "passed"]) if s["approve"] else "rejected"
    return (f"On {s['day']}, {s['bill']} was {verb} by {s['body']} in a "
            f"{s['yes']}-{s['no']} vote.")


def _vote_r2(s, rng):
    verb = rng.choice(["approved", "passed"]) if s["approve"] else \
        rng.choice(["rejected", "voted down"])
    return (f"By a vote of {s['yes']} to {s['no']}, {s['body']} {verb} "
            f"{s['bill']} {_on_day(s['day'], rng)}.")


def _vote_count_change(s, rng):
    yes = _other(rng, range(s["size"] // 2 + 1, s["size"]), s["yes"])
    return _replace(s, yes=yes, no=rng.randint(1, s["size"] - yes))


VOTE = Frame(
    "vote", "politics", _vote_sample,
    (_vote_r0, _vote_r1, _vote_r2),
    (
        lambda s, rng: _replace(s, approve=not s["approve"]),
        _vote_count_change,
        lambda s, rng: _replace(s, bill=_other(rng, _BILLS, s["bill"])),
        lambda s, rng: _replace(s, day=_other(rng, DAYS[:5], s["day"])),
    ),
)


# -- politics: quoted pledges -------------------------------------------------
_OFFICIALS = [("Governor", "state"), ("Mayor", "city"),
              ("Finance Minister", "government"), ("Premier", "province")]
_ACTIONS = [
    "raise taxes", "cut school funding", "raise bus fares",
    "close the central hospital", "sell the regional airport",
    "delay the budget vote", "build a new stadium", "lower the speed limit",
    "reopen the old rail line", "freeze public sector pay",
    "raise water prices", "hire more police officers",
]
_WHEN = ["this year", "next year", "this spring", "this fall",
         "before the election"]


def _pledge_sample(rng):
    title, unit = rng.choice(_OFFICIALS)
    return {"title": title, "unit": unit, "name": rng.choice(PEOPLE),
            "act": rng.choice(_ACTIONS), "when": rng.choice(_WHEN),
            "neg": rng.random() < 0.5, "day": rng.choice(DAYS[:5])}


def _pledge_r0(s, rng):
    will = rng.choice(["will not", "won't"]) if s["neg"] else "will"
    return (f"\"We {will} {s['act']} {s['when']},\" {s['title']} {s['name']} "
            f"said {_on_day(s['day'], rng)}.")


def _pledge_r1(s, rng):
    would = "would not" if s["neg"] else "would"
    return (f"{s['title']} {s['name']} said {_on_day(s['day'], rng)} that the "
            f"{s['unit']} {would} {s['act']} {s['when']}.")


def _pledge_r2(s, rng):
    going = "is not going to" if s["neg"] else "is going to"
    return (f"On {s['day']}, {s['title']} {s['name']} told reporters: \"The "
            f"{s['unit']} {going} {s['act']} {s['when']}.\"")


PLEDGE = Frame(
    "pledge", "politics", _pledge_sample,
    (_pledge_r0, _pledge_r1, _pledge_r2),
    (
        lambda s, rng: _replace(s, neg=not s["neg"]),
        lambda s, rng: _replace(s, when=_other(rng, _WHEN, s["when"])),
        lambda s, rng: _replace(s, act=_other(rng, _ACTIONS, s["act"])),
        lambda s, rng: _replace(s, name=_other(rng, PEOPLE, s["name"])),
    ),
)


# -- politics: elections ------------------------------------------------------
def _election_sample(rng):
    winner, loser = rng.sample(PEOPLE, 2)
    p = rng.randint(51, 74)
    return {"winner": winner, "loser": loser, "p": p,
            "q": rng.randint(max(10, 100 - p - 15), 100 - p),
            "city": rng.choice(CITIES)}


def _election_r0(s, rng):
    return (f"{s['winner']} was elected mayor of {s['city']} with "
            f"{_fmt_pct(s['p'], rng)} of the vote, defeating {s['loser']}, who "
            f"received {_fmt_pct(s['q'], rng)}.")


def _election_r1(s, rng):
    return (f"{s['loser']} lost the race for mayor of {s['city']} to "
            f"{s['winner']}, {s['q']} percent to {s['p']} percent.")


def _election_r2(s, rng):
    return (f"Voters in {s['city']} chose {s['winner']} as mayor, giving "
            f"{_fmt_pct(s['p'], rng)} of the vote to {s['winner']} and "
            f"{_fmt_pct(s['q'], rng)} to {s['loser']}.")


def _election_share_change(s, rng):
    p = _other(rng, range(51, 75), s["p"])
    return _replace(s, p=p, q=rng.randint(max(10, 100 - p - 15), 100 - p))


ELECTION = Frame(
    "election", "politics", _election_sample,
    (_election_r0, _election_r1, _election_r2),
    (
        lambda s, rng: _replace(s, winner=s["loser"], loser=s["winner"]),
        _election_share_change,
        lambda s, rng: _replace(s, city=_other(rng, CITIES, s["city"])),
    ),
)


# -- weather: forecasts -------------------------------------------------------
def _forecast_sample(rng):
    snow = rng.random() < 0.5
    return {"city": rng.choice(CITIES), "snow": snow,
            "inches": rng.randint(4, 24) if snow else rng.randint(2, 8),
            "day": rng.choice(DAYS)}


def _precip(s) -> str:
    return "snow" if s["snow"] else "rain"


def _forecast_r0(s, rng):
    return (f"Forecasters expect up to {_fmt_count(s['inches'], rng)} inches of "
            f"{_precip(s)} in {s['city']} {_on_day(s['day'], rng)}.")


def _forecast_r1(s, rng):
    return (f"As much as {_fmt_count(s['inches'], rng)} inches of {_precip(s)} "
            f"could fall on {s['city']} {_on_day(s['day'], rng)}, forecasters said.")


def _forecast_r2(s, rng):
    return (f"{s['city']} could see up to {_fmt_count(s['inches'], rng)} inches "
            f"of {_precip(s)} {_on_day(s['day'], rng)}, according to the "
            f"latest forecast.")


FORECAST = Frame(
    "forecast", "weather", _forecast_sample,
    (_forecast_r0, _forecast_r1, _forecast_r2),
    (
        lambda s, rng: _replace(s, inches=_shift_int(rng, s["inches"], 2, 30)),
        lambda s, rng: _replace(s, snow=not s["snow"]),
        lambda s, rng: _replace(s, city=_other(rng, CITIES, s["city"])),
        lambda s, rng: _replace(s, day=_other(rng, DAYS, s["day"])),
    ),
)


# -- weather: temperature records ----------------------------------------------
def _temp_sample(rng):
    high = rng.random() < 0.6
    return {"city": rng.choice(CITIES), "high": high,
            "deg": rng.randint(85, 112) if high else rng.randint(-5, 30),
            "day": rng.choice(DAYS), "month": rng.choice(MONTHS)}


_DEG_SHIFTS = [d for d in range(-12, 13) if abs(d) >= 3]


def _deg(d: int) -> str:
    return f"minus {-d}" if d < 0 else str(d)


def _temp_r0(s, rng):
    verb = rng.choice(["reached", "hit"]) if s["high"] else \
        rng.choice(["fell to", "dropped to"])
    word = "highest" if s["high"] else "lowest"
    return (f"The temperature in {s['city']} {verb} {_deg(s['deg'])} degrees "
            f"{_on_day(s['day'], rng)}, the {word} ever recorded there in "
            f"{s['month']}.")


def _temp_r1(s, rng):
    kind = "high" if s["high"] else "low"
    return (f"{s['city']} set a record {kind} for {s['month']} "
            f"{_on_day(s['day'], rng)} when the temperature "
            f"{'climbed' if s['high'] else 'sank'} to {_deg(s['deg'])} degrees.")


def _temp_r2(s, rng):
    kind = "high" if s["high"] else "low"
    return (f"A {s['month']} record {kind} of {_deg(s['deg'])} degrees was set in "
            f"{s['city']} {_on_day(s['day'], rng)}.")


TEMPERATURE = Frame(
    "temperature", "weather", _temp_sample,
    (_temp_r0, _temp_r1, _temp_r2),
    (
        lambda s, rng: _replace(s, deg=s["deg"] + rng.choice(_DEG_SHIFTS)),
        lambda s, rng: _replace(s, month=_other(rng, MONTHS, s["month"])),
        lambda s, rng: _replace(s, city=_other(rng, CITIES, s["city"])),
        lambda s, rng: _replace(s, high=not s["high"]),
    ),
)


# -- tech: product launches ---------------------------------------------------
_PRODUCTS = ["smartphone", "laptop", "smartwatch", "tablet", "headset",
             "smart speaker", "e-reader", "game console", "fitness tracker"]
_PRICES = list(range(49, 1000, 50)) + list(range(1099, 2500, 100))


def _launch_sample(rng):
    return {"co": rng.choice(COMPANIES), "prod": rng.choice(_PRODUCTS),
            "price": rng.choice(_PRICES), "month": rng.choice(MONTHS)}


def _dollars(n: int, rng) -> str:
    return rng.choice([f"${n:,}", f"${n:,}", f"{n:,} dollars"])


def _launch_r0(s, rng):
    return (f"{s['co']} will begin selling its new {s['prod']} in {s['month']} "
            f"for {_dollars(s['price'], rng)}.")


def _launch_r1(s, rng):
    return (f"The new {s['prod']} from {s['co']} goes on sale in {s['month']} "
            f"and will cost {_dollars(s['price'], rng)}.")


def _launch_r2(s, rng):
    return (f"{s['co']}'s latest {s['prod']}, priced at {_dollars(s['price'], rng)}, "
            f"will be available starting in {s['month']}.")


def _launch_r3(s, rng):
    return (f"\"Our new {s['prod']} will be in stores in {s['month']},\" "
            f"{s['co']} said, adding that it would sell for "
            f"{_dollars(s['price'], rng)}.")


LAUNCH = Frame(
    "launch", "tech", _launch_sample,
    (_launch_r0, _launch_r1, _launch_r2, _launch_r3),
    (
        lambda s, rng: _replace(s, price=_other(rng, _PRICES, s["price"])),
        lambda s, rng: _replace(s, month=_other(rng, MONTHS, s["month"])),
        lambda s, rng: _replace(s, prod=_other(rng, _PRODUCTS, s["prod"])),
        lambda s, rng: _replace(s, co=_other(rng, COMPANIES, s["co"])),
    ),
)


# -- tech: data breaches ------------------------------------------------------
_DATA = ["email addresses", "credit card numbers", "passwords",
         "home addresses", "phone numbers", "dates of birth"]


def _breach_sample(rng):
    return {"co": rng.choice(COMPANIES), "n": rng.randint(5, 1500),
            "data": rng.choice(_DATA), "day": rng.choice(DAYS[:5])}


def _breach_r0(s, rng):
    return (f"{s['co']} said {_on_day(s['day'], rng)} that hackers had stolen the "
            f"{s['data']} of {_fmt_scaled_count(s['n'], rng)} customers.")


def _breach_r1(s, rng):
    return (f"Hackers stole {s['data']} belonging to "
            f"{_fmt_scaled_count(s['n'], rng)} {s['co']} customers, the company "
            f"said {_on_day(s['day'], rng)}.")


def _breach_r2(s, rng):
    return (f"The {s['data']} of {_fmt_scaled_count(s['n'], rng)} customers were "
            f"taken in a cyberattack on {s['co']}, the company disclosed "
            f"{_on_day(s['day'], rng)}.")


BREACH = Frame(
    "breach", "tech", _breach_sample,
    (_breach_r0, _breach_r1, _breach_r2),
    (
        lambda s, rng: _replace(s, n=_shift_int(rng, s["n"], 5, 1500)),
        lambda s, rng: _replace(s, data=_other(rng, _DATA, s["data"])),
        lambda s, rng: _replace(s, co=_other(rng, COMPANIES, s["co"])),
        lambda s, rng: _replace(s, day=_other(rng, DAYS[:5], s["day"])),
    ),
)


# -- tech: user numbers -------------------------------------------------------
_APPS = ("Chatterly PhotoNest Trailmark Budgetly Soundpath Quillo Streamly "
         "Pocketbank Notewise Ridealong Tasklane Plantpal").split()


def _users_sample(rng):
    old = rng.randint(5, 200)
    return {"app": rng.choice(_APPS), "old": old,
            "new": old + rng.randint(max(2, old // 10), old + 20)}


def _users_r0(s, rng):
    return (f"{s['app']} now has {s['new']} million monthly users, up from "
            f"{s['old']} million a year earlier.")


def _users_r1(s, rng):
    return (f"The number of people using {s['app']} each month has grown to "
            f"{s['new']} million from {s['old']} million a year ago.")


def _users_r2(s, rng):
    return (f"A year ago {s['app']} had {s['old']} million monthly users; today it "
            f"has {s['new']} million.")


USERS = Frame(
    "users", "tech", _users_sample,
    (_users_r0, _users_r1, _users_r2),
    (
        lambda s, rng: _replace(s, new=_shift_int(rng, s["new"], s["old"] + 1,
                                                  s["new"] * 2 + 10)),
        lambda s, rng: _replace(s, old=_shift_int(rng, s["old"], 2, s["new"] - 1)),
        lambda s, rng: _replace(s, app=_other(rng, _APPS, s["app"])),
    ),
)


PARAPHRASE_FRAMES: tuple[Frame, ...] = (
    EARNINGS, DEAL, STOCK, JOBS, MATCH, CONTRACT, SCORER, STUDY, ASTRO, VOTE,
    PLEDGE, ELECTION, FORECAST, TEMPERATURE, LAUNCH, BREACH, USERS,
)

PARAPHRASE_COLUMNS = ("label", "sentence1", "sentence2")
# (rows, positive rows) per split; 2/3 positive like MRPC.
PARAPHRASE_SIZES = {"train": (1600, 1067), "validation": (400, 267)}
# How often the second sentence reuses the first sentence's template.
_SAME_TEMPLATE_P = {1: 0.4, 0: 0.4}
# How often a non-paraphrase changes two facts instead of one.
_DOUBLE_CHANGE_P = 0.35
# How often a non-paraphrase is a different event of the same kind (every
# slot sampled afresh): the easy negatives.
_FRESH_EVENT_P = 0.15


def _make_pair(rng: random.Random, label: int) -> tuple[str, str]:
    frame = rng.choice(PARAPHRASE_FRAMES)
    slots = frame.sample(rng)
    v1 = rng.randrange(len(frame.renderers))
    s1 = frame.renderers[v1](slots, rng)
    if label == 0 and rng.random() < _FRESH_EVENT_P:
        slots = frame.sample(rng)
    elif label == 0:
        n_changes = 2 if rng.random() < _DOUBLE_CHANGE_P else 1
        for change in rng.sample(frame.perturbations, n_changes):
            slots = change(slots, rng)
    for _ in range(20):
        if rng.random() < _SAME_TEMPLATE_P[label]:
            v2 = v1
        else:
            v2 = _other(rng, range(len(frame.renderers)), v1)
        s2 = frame.renderers[v2](slots, rng)
        if s2 != s1:
            return s1, s2
    raise RuntimeError(f"could not render a distinct pair for {frame.name}")


def make_paraphrase_pairs(seed: int = 0) -> dict[str, list[dict]]:
    """Build the paraphrase dataset.

    Returns ``{"train": [...], "validation": [...]}``; every row is a dict with
    keys ``label`` (int, 1 = paraphrase), ``sentence1`` and ``sentence2``.
    No sentence occurs twice anywhere in the dataset, so no pair (and no
    sentence) is shared between the splits.
    """
    rng = random.Random(seed)
    seen: set[str] = set()  # membership tests only; never iterated
    splits: dict[str, list[dict]] = {}
    for split, (n_rows, n_pos) in PARAPHRASE_SIZES.items():
        labels = [1] * n_pos + [0] * (n_rows - n_pos)
        rng.shuffle(labels)
        rows = []
        for label in labels:
            while True:
                s1, s2 = _make_pair(rng, label)
                if s1 not in seen and s2 not in seen:
                    break
            seen.update((s1, s2))
            rows.append({"label": label, "sentence1": s1, "sentence2": s2})
        splits[split] = rows
    return splits


# --------------------------------------------------------------------------- #
# Writing files
# --------------------------------------------------------------------------- #

def write_paraphrase_tsv(rows: list[dict], path: Path) -> Path:
    """Write rows as an unquoted, tab-separated file with a header line."""
    lines = ["\t".join(PARAPHRASE_COLUMNS)]
    for row in rows:
        fields = [str(row[c]) for c in PARAPHRASE_COLUMNS]
        for field in fields:
            if "\t" in field or "\n" in field or "\r" in field:
                raise ValueError(f"field contains a tab or newline: {field!r}")
        lines.append("\t".join(fields))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(("\n".join(lines) + "\n").encode("utf-8"))
    return path


def write_all(data_dir: Path, seed: int = 0) -> list[Path]:
    """Generate the paraphrase dataset and write it under ``data_dir / "paraphrase"``.

    Returns the written paths.  Output is byte-identical for a given seed.
    """
    data_dir = Path(data_dir)
    para = make_paraphrase_pairs(seed)
    return [
        write_paraphrase_tsv(para[split], data_dir / "paraphrase" / f"{split}.tsv")
        for split in ("train", "validation")
    ]


def _default_data_dir() -> Path:
    # scripts/make_paraphrase_data.py -> repository root
    return Path(__file__).resolve().parents[1] / "data"


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else _default_data_dir()
    for p in write_all(target):
        print(p)
