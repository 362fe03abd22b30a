"""Regenerate the committed speech datasets under ``data/``.

This script is the single source of the audio, transcripts and text corpora that the demo and
the tests use. It writes three domains:

* ``data/demo/banking/``      -- the demo set;
* ``data/heldout/travel/``    -- held-out domain, used only by tests;
* ``data/heldout/healthcare/`` -- held-out domain, used only by tests.

Each domain gets ``audio/<id>.wav`` (16 kHz mono 16-bit PCM, ~0.3 s of silence at both ends),
``manifest.jsonl`` (reference transcripts, numbers written as words), ``corpus.txt`` (related
domain text for adapting a language model, never containing a test utterance) and ``README.md``.

Test sentences and corpus sentences come from the same small per-domain sentence grammar,
expanded with a fixed-seed RNG; corpus lines equal to a test sentence (after normalisation) are
dropped, and a few dozen hand-written FAQ sentences are added to the corpus.

The generated files are committed, so nothing else in the project needs the synthesisers. Only
regenerating needs the Debian packages ``espeak-ng`` and ``sox`` (``apt-get install espeak-ng
sox``); the script itself uses the standard library only::

    python scripts/make_dataset.py
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import subprocess
import sys
import tempfile
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data"

SEED = 20240611
SAMPLE_RATE = 16_000
PAD_SECONDS = 0.3
MIN_SECONDS = 2.0
MAX_SECONDS = 5.0  # up to 6 s would do; 5 s keeps data/ small
MIN_WORDS = 6
MAX_WORDS = 13  # up to 16 would do; shorter sentences fit MAX_SECONDS at slow speeds
CORPUS_GRAMMAR_LINES = 600  # distinct grammar sentences per corpus (before dropping test ones)
MIN_CORPUS_LINES = 400

# espeak-ng voice+variant names and speeds (words per minute), rotated over utterances. 7 voices
# and 5 speeds are coprime, so every 35 consecutive utterances use each combination once.
# US and British accents, female and male. The plain default voices (en-us, en, en-gb-x-rp and
# the +m3, +m7, +f4 variants) were tried first and dropped: PocketSphinx's en-us acoustic model
# gets 40-90 % WER on them even with a domain language model, against ~2-15 % for these.
VOICES = (
    "en-us+f2",
    "en-us+edward",
    "en-us+f5",
    "en-us+klatt",
    "en+f5",
    "en+edward",
    "en-gb-x-rp+f5",
)
SPEEDS = (140, 150, 160, 170, 185)

# --------------------------------------------------------------------------------------------
# Numbers
# --------------------------------------------------------------------------------------------

_ONES = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
    "nineteen",
]  # fmt: skip
_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def number_to_words(n: int) -> str:
    """American cardinal without "and" or hyphens: 1250 -> "one thousand two hundred fifty"."""
    if n < 0:
        return "minus " + number_to_words(-n)
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + ("" if ones == 0 else " " + _ONES[ones])
    for size, name in ((1_000_000, "million"), (1_000, "thousand"), (100, "hundred")):
        if n >= size:
            head, rest = divmod(n, size)
            words = number_to_words(head) + " " + name
            return words if rest == 0 else words + " " + number_to_words(rest)
    raise AssertionError(n)  # pragma: no cover


# In grammar values a number is written as a token: "#$200" (an amount of dollars), "#5%"
# (a percentage) or "#3" (a plain count). Test sentences always spell numbers out; corpus
# sentences use digits about half of the time, as real text would.
_NUMBER_TOKEN = re.compile(r"#(\$?)(\d+)(%?)")


def _render_number(match: re.Match[str], digits: bool) -> str:
    dollar, value, percent = match.group(1), int(match.group(2)), match.group(3)
    if digits:
        return f"{dollar}{value}{percent}"
    words = number_to_words(value)
    if dollar:
        words += " dollar" if value == 1 else " dollars"
    if percent:
        words += " percent"
    return words


def normalise(text: str) -> str:
    """Lower-case, spell out "$200", "5%" and plain digits, strip punctuation, squeeze spaces."""
    text = text.lower()
    text = re.sub(r"\$(\d+)", lambda m: number_to_words(int(m.group(1))) + " dollars", text)
    text = re.sub(r"(\d+)%", lambda m: number_to_words(int(m.group(1))) + " percent", text)
    text = re.sub(r"\d+", lambda m: number_to_words(int(m.group(0))), text)
    text = re.sub(r"[^a-z' ]+", " ", text)
    return " ".join(text.split())


# --------------------------------------------------------------------------------------------
# Grammars
# --------------------------------------------------------------------------------------------

WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
ORDINALS = [
    "first",
    "second",
    "third",
    "fourth",
    "fifth",
    "sixth",
    "seventh",
    "eighth",
    "ninth",
    "tenth",
    "twelfth",
    "fifteenth",
    "twentieth",
    "thirtieth",
]


@dataclass(frozen=True)
class Grammar:
    """Templates with ``{slot}`` references; slot values may reference other slots."""

    name: str
    templates: tuple[str, ...]
    slots: dict[str, list[str]]
    faq: tuple[str, ...]
    description: str

    def expand(self, template: str, rng: random.Random, *, digits: bool) -> str:
        text = template
        for _ in range(10):
            if "{" not in text:
                break
            text = re.sub(r"\{(\w+)\}", lambda m: rng.choice(self.slots[m.group(1)]), text)
        else:  # pragma: no cover - a grammar bug
            raise RuntimeError(f"slot recursion too deep in {template!r}")
        text = _NUMBER_TOKEN.sub(lambda m: _render_number(m, digits and rng.random() < 0.5), text)
        text = " ".join(text.split())
        return text[0].upper() + text[1:]


def _amounts(*values: int) -> list[str]:
    return [f"#${v}" for v in values]


def _counted(noun: str, *values: int) -> list[str]:
    return [f"#{v} {noun}" if v != 1 else f"one {noun.removesuffix('s')}" for v in values]


BANKING = Grammar(
    name="banking",
    description="retail banking: transfers, balances, cards, loans, bill payments, statements",
    templates=(
        "Please transfer {amount} to my {account} account.",
        "I want to move {amount} {transfer_path}.",
        "Can you send {amount} to {payee} {when}?",
        "Transfer {amount} {transfer_path} {when}.",
        "Set up a monthly transfer of {amount} to my {account} account.",
        "What is the balance on my {account} account?",
        "How much money do I have in my {account} account?",
        "Show me the last {count} transactions on my {account} account.",
        "Can you tell me my available balance {when_now}?",
        "I lost my {card} card and I need a new one.",
        "Please block my {card} card right away.",
        "Someone used my {card} card without my permission.",
        "I would like to activate my new {card} card.",
        "My {card} card was declined at {merchant} {when_past}.",
        "What is the interest rate on a {loan} loan?",
        "I want to apply for a {loan} loan of {big_amount}.",
        "When is the next payment due on my {loan} loan?",
        "Can I pay off my {loan} loan early without a fee?",
        "Can I raise the limit on my credit card to {big_amount}?",
        "Please pay my {bill} bill of {small_amount} {when}.",
        "I need to pay the {bill} bill from my {account} account.",
        "I need a copy of my {account} account statement for {month}.",
        "Please send me the statement for {month} by email.",
        "I want to open a new {account} account {today_or_soon}.",
        "Why was I charged a fee of {small_amount} {when_past}?",
        "I would like to dispute a charge of {small_amount} from {merchant}.",
        "How do I deposit a check into my {account} account?",
        "Is there a fee for using my {card} card abroad?",
        "What is the interest rate on my {account} account?",
        "Can you close my {account} account and send me the money?",
    ),
    slots={
        "account": ["checking", "savings", "business", "joint", "student", "retirement"],
        "transfer_path": [
            "from my checking account to my savings account",
            "from my savings account to my checking account",
            "from savings to checking",
            "from checking to savings",
            "from my business account to my personal account",
            "from my joint account to my checking account",
            "into my retirement account",
        ],
        "amount": _amounts(50, 100, 150, 200, 250, 300, 400, 500, 600, 800, 1000, 1500, 2000),
        "small_amount": _amounts(10, 15, 20, 25, 30, 40, 50, 60, 75, 80, 90, 120, 150, 200, 300),
        "big_amount": _amounts(2000, 3000, 5000, 8000, 10000, 15000, 20000, 50000, 100000),
        "payee": [
            "my landlord",
            "my sister",
            "my brother",
            "my mother",
            "my father",
            "John Smith",
            "Mary Jones",
            "the electric company",
        ],
        "when": [
            "today",
            "tomorrow",
            "on Friday",
            "next Monday",
            "at the end of the month",
            "this afternoon",
            "on the {ordinal} of {month}",
            "on {weekday}",
        ],
        "when_now": ["right now", "today", "please", "for today"],
        "when_past": [
            "yesterday",
            "last week",
            "this morning",
            "on {weekday}",
            "last month",
            "on the {ordinal} of {month}",
        ],
        "today_or_soon": ["today", "this week", "online", "for my son", "for my daughter"],
        "card": ["debit", "credit", "business credit", "gold credit", "travel credit"],
        "loan": ["car", "home", "student", "personal", "business"],
        "bill": ["electric", "phone", "water", "internet", "gas", "insurance", "credit card"],
        "merchant": [
            "the grocery store",
            "a gas station",
            "an online store",
            "a hotel",
            "a restaurant",
            "the airport",
            "a coffee shop",
        ],
        "count": [f"#{n}" for n in (3, 5, 10, 20)],
        "month": MONTHS,
        "weekday": WEEKDAYS,
        "ordinal": ORDINALS,
    },
    faq=(
        "How do I reset my online banking password?",
        "What are your branch opening hours on Saturday?",
        "You can check your balance at any time in the mobile app.",
        "Transfers between your own accounts are free of charge.",
        "A transfer to another bank usually takes one to three business days.",
        "If your card is lost or stolen, call us right away so we can block it.",
        "A new debit card arrives by mail within seven to ten days.",
        "You can activate a new card in the app or at any cash machine.",
        "The daily cash withdrawal limit on a debit card is $500.",
        "Savings accounts currently earn 2% interest per year.",
        "We never ask for your password or your PIN by phone or email.",
        "Monthly statements are available online for the last seven years.",
        "You can set up automatic bill payments for your phone and electric bills.",
        "An overdraft fee of $35 applies when your balance goes below zero.",
        "To open a joint account both people need to bring a photo ID.",
        "Student accounts have no monthly fee.",
        "Car loans are available for new and used cars.",
        "The interest rate on a personal loan depends on your credit score.",
        "You can pay off a loan early without any extra fee.",
        "Home loans can be fixed rate or variable rate.",
        "To dispute a charge, tell us the date, the amount and the merchant.",
        "Most disputes are resolved within ten business days.",
        "Deposit a check by taking a photo of the front and the back in the app.",
        "Deposits made before five in the afternoon are available the next business day.",
        "Using your credit card abroad may include a foreign transaction fee of 3%.",
        "You can raise your credit limit once every six months.",
        "Business accounts include free transfers to other business customers.",
        "Your account number is printed at the bottom of every check.",
        "Retirement accounts have yearly limits on how much you can deposit.",
        "Please keep your card and your PIN in separate places.",
        "The minimum payment on your credit card is due every month.",
        "Interest is paid into savings accounts on the last day of each month.",
        "You can change your address online or at any branch.",
        "Wire transfers to other countries cost $25.",
        "A cashier's check can be ordered at any branch.",
        "We will send you a text message when a large payment leaves your account.",
    ),
)

TRAVEL_CITIES = [
    "Boston",
    "Chicago",
    "Denver",
    "Seattle",
    "Dallas",
    "Miami",
    "Atlanta",
    "London",
    "Paris",
    "Rome",
    "Madrid",
    "Toronto",
    "New York",
    "San Francisco",
]

# Trains only run within a region.
TRAIN_REGIONS = (
    ["London", "Paris", "Rome", "Madrid", "Berlin"],
    ["Boston", "New York", "Washington", "Chicago"],
)
TRAIN_CITIES = [city for region in TRAIN_REGIONS for city in region]
TRAIN_ROUTES = [f"from {a} to {b}" for r in TRAIN_REGIONS for a in r for b in r if a != b]

TRAVEL = Grammar(
    name="travel",
    description="travel booking: flights, hotels, trains, baggage, rental cars, refunds",
    templates=(
        "I need a flight {route} {day}.",
        "Please book a {cabin} seat on the flight {route} {day}.",
        "Is my flight to {city} still on time?",
        "Can I change my flight to {city} to {new_day}?",
        "I want to cancel my trip to {city} and get a refund.",
        "How much is the {cabin} fare to {city} {day}?",
        "Please upgrade my seat to {cabin} class.",
        "Can I get a {seat} seat on my flight {day}?",
        "What time does my flight {route} leave?",
        "Book a hotel room in {city} for {nights}.",
        "Do you have a room with {room_feature} for {nights}?",
        "Is breakfast included with my hotel room in {city}?",
        "I would like to check out of my hotel {checkout}.",
        "Can I get a cheaper hotel near {landmark} in {city}?",
        "What time does the next train to {train_city} leave?",
        "I would like {tickets} train tickets to {train_city} {day}.",
        "Is there a night train {train_route}?",
        "How long does the train {train_route} take?",
        "My bag did not arrive on the flight from {city}.",
        "How many bags can I check on a flight to {city}?",
        "What is the fee for an extra bag on {trip_kind}?",
        "My suitcase was damaged on my flight {day_past}.",
        "I need to rent a car in {city} for {days}.",
        "Can I return the rental car at the airport in {city}?",
        "When will I get my refund for the trip to {city}?",
        "Do I need a visa to travel to {city}?",
    ),
    slots={
        "route": [f"from {a} to {b}" for a in TRAVEL_CITIES for b in TRAVEL_CITIES if a != b],
        "train_route": TRAIN_ROUTES,
        "train_city": TRAIN_CITIES,
        "new_day": [
            "tomorrow",
            "next week",
            "{weekday}",
            "{weekday} morning",
            "next {weekday}",
            "the {ordinal} of {month}",
        ],
        "city": TRAVEL_CITIES,
        "day": [
            "today",
            "tomorrow",
            "tomorrow morning",
            "tonight",
            "next week",
            "on {weekday}",
            "next {weekday}",
            "on {weekday} morning",
            "on {weekday} evening",
            "on the {ordinal} of {month}",
        ],
        "day_past": ["yesterday", "last night", "last week", "on {weekday}"],
        "cabin": ["economy", "business", "first class", "premium economy"],
        "seat": ["window", "aisle", "front row", "exit row"],
        "nights": ["one night", "two nights", "three nights", "a week", *_counted("nights", 2, 5)],
        "days": ["one day", "a week", "the weekend", *_counted("days", 2, 3, 4, 5, 10)],
        "room_feature": [
            "two beds",
            "a king bed",
            "a sea view",
            "a balcony",
            "a kitchen",
            "free parking",
        ],
        "checkout": ["late tomorrow", "early tomorrow morning", "on {weekday}", "a day early"],
        "landmark": ["the airport", "the train station", "the city center", "the beach"],
        "tickets": [f"#{n}" for n in (2, 3, 4, 5)] + ["two", "three"],
        "trip_kind": ["a domestic flight", "an international flight", "a short flight"],
        "month": MONTHS,
        "weekday": WEEKDAYS,
        "ordinal": ORDINALS,
    },
    faq=(
        "Check in online opens twenty four hours before your flight.",
        "You can bring one carry on bag and one small personal item.",
        "The first checked bag on international flights is free.",
        "An extra checked bag costs $35 on domestic flights.",
        "Bags heavier than fifty pounds have an extra fee.",
        "Please arrive at the airport two hours before a domestic flight.",
        "For international flights please arrive three hours early.",
        "Boarding closes fifteen minutes before departure.",
        "Hotel check in starts at three in the afternoon.",
        "Check out time is eleven in the morning.",
        "Breakfast is included with most hotel rooms.",
        "Free cancellation is available up to one day before arrival.",
        "Refunds are sent back to your card within ten business days.",
        "If your flight is cancelled you can rebook at no cost.",
        "Train tickets can be changed until the train leaves.",
        "Children under two travel free on trains.",
        "Night trains have beds and a small restaurant car.",
        "To rent a car you need a driving license and a credit card.",
        "The rental car should be returned with a full tank.",
        "Lost bags are usually delivered to your hotel within two days.",
        "Report a damaged suitcase at the baggage desk before you leave the airport.",
        "You can choose a window or an aisle seat when you book.",
        "Business class includes a larger seat and free meals.",
        "Upgrades depend on seat availability on the day of the flight.",
        "Some countries require a visa or an electronic travel permit.",
        "Your passport must be valid for six months after your trip.",
        "Flight status updates are sent by text message.",
        "Hotels near the airport offer a free shuttle bus.",
        "Travel insurance covers cancelled trips and lost bags.",
        "You earn miles for every flight you take with us.",
        "Prices for flights in the summer are usually higher.",
        "Trains from London to Paris take a little over two hours.",
        "A hotel room with a sea view costs 20% more.",
        "You can pay for your trip in up to 3 monthly payments.",
    ),
)

HEALTHCARE = Grammar(
    name="healthcare",
    description="a medical clinic: appointments, prescriptions, symptoms, test results, insurance",
    templates=(
        "I need to make an appointment with {doctor} {day}.",
        "Can I see {doctor} {day} {time}?",
        "Please cancel my appointment with {doctor} {day}.",
        "I would like to move my appointment to {day} {time}.",
        "Is the clinic open {day} {time}?",
        "Is there a doctor available {day} {time}?",
        "I need a refill of my {medicine} medicine.",
        "Can you send my {medicine} prescription to the pharmacy {pharmacy}?",
        "My {medicine} prescription runs out {day}.",
        "How often should I take my {medicine} medicine?",
        "I take {dose} of my {medicine} medicine {frequency}.",
        "I have had {symptom} for {duration}.",
        "My {family} has {symptom} and cannot sleep.",
        "What should I do about {symptom} that will not go away?",
        "My {family} has had {symptom} since {day_past}.",
        "I need the results of my {test} from {day_past}.",
        "Are the results of my {test} ready yet?",
        "Do I need to stop eating before my {test} {day}?",
        "Does my insurance cover a visit to {doctor}?",
        "How much does a visit to {doctor} cost without insurance?",
        "Does my insurance plan pay for {medicine} medicine?",
        "I need to update my insurance information before my visit {day}.",
        "Can my {family} get a flu shot {day}?",
        "Can you send me a copy of my medical records?",
    ),
    slots={
        "doctor": [
            "my family doctor",
            "a dentist",
            "a skin doctor",
            "a heart doctor",
            "the nurse",
            "a specialist",
            "Doctor Smith",
            "Doctor Brown",
            "Doctor Lee",
            "Doctor Miller",
            "an eye doctor",
        ],
        "day": [
            "today",
            "tomorrow",
            "this week",
            "next week",
            "on {weekday}",
            "next {weekday}",
            "this {weekday}",
            "on the {ordinal} of {month}",
        ],
        "day_past": ["yesterday", "last week", "last {weekday}", "{weekday}", "last month"],
        "time": [
            "in the morning",
            "in the afternoon",
            "at nine in the morning",
            "at ten in the morning",
            "at two in the afternoon",
            "at four in the afternoon",
            "after work",
            "at noon",
            "before lunch",
        ],
        "medicine": [
            "blood pressure",
            "allergy",
            "pain",
            "asthma",
            "cholesterol",
            "sleep",
            "heart",
            "diabetes",
        ],
        "pharmacy": [
            "on Main Street",
            "near my house",
            "next to the hospital",
            "on Park Avenue",
            "in the mall",
        ],
        "dose": ["one tablet", "two tablets", "half a tablet", *_counted("tablets", 2, 3)],
        "frequency": ["every morning", "twice a day", "three times a day", "before bed"],
        "symptom": [
            "a headache",
            "a sore throat",
            "a bad cough",
            "a fever",
            "a skin rash",
            "back pain",
            "a stomach ache",
            "a runny nose",
            "trouble sleeping",
        ],
        "duration": [
            "a week",
            "two days",
            "three days",
            "two weeks",
            "a month",
            *_counted("days", 2, 3, 4, 5, 10),
            *_counted("weeks", 2, 3),
        ],
        "family": ["son", "daughter", "husband", "wife", "mother", "father", "baby"],
        "test": [
            "blood test",
            "allergy test",
            "eye exam",
            "heart scan",
            "urine test",
            "chest scan",
        ],
        "month": MONTHS,
        "weekday": WEEKDAYS,
        "ordinal": ORDINALS,
    },
    faq=(
        "The clinic is open from eight in the morning until six in the evening.",
        "Please arrive fifteen minutes before your appointment.",
        "You can book, move or cancel an appointment online.",
        "Please cancel at least one day before your appointment.",
        "Bring your insurance card and a photo ID to every visit.",
        "Prescription refills are usually ready within two business days.",
        "Your pharmacy can call us to ask for a refill.",
        "Take your medicine at the same time every day.",
        "Do not stop taking your blood pressure medicine without asking your doctor.",
        "Most blood test results are ready within three days.",
        "Do not eat for eight hours before a cholesterol test.",
        "We will call you if your test results need a follow up visit.",
        "Call us right away if a fever lasts more than three days.",
        "A sore throat with a high fever should be checked by a doctor.",
        "Children with a fever should stay home from school.",
        "Flu shots are available every fall for adults and children.",
        "Your insurance plan may ask you to pay $25 for each visit.",
        "Specialist visits may need a referral from your family doctor.",
        "A visit without insurance costs $150.",
        "Most insurance plans cover 80% of the cost of a hospital stay.",
        "You can see your medical records in the patient portal.",
        "Our nurses answer questions by phone during opening hours.",
        "In an emergency call nine one one or go to the nearest hospital.",
        "Drink plenty of water and rest when you have a cold.",
        "Back pain often gets better with gentle exercise.",
        "Allergy season usually starts in the spring.",
        "Tell your doctor about every medicine you take.",
        "A skin rash that spreads quickly needs to be seen the same day.",
        "Eye exams are recommended once every two years.",
        "New patients should fill in a health form before the first visit.",
        "Dentist appointments are available on Saturday mornings.",
        "Parking at the clinic is free for patients.",
        "Your doctor can send a prescription directly to your pharmacy.",
        "Please tell the nurse if you have any allergies to medicine.",
    ),
)

# (folder under data/, grammar, number of test utterances); ids are <grammar name>-NNN
DOMAINS: tuple[tuple[str, Grammar, int], ...] = (
    ("demo/banking", BANKING, 48),
    ("heldout/travel", TRAVEL, 24),
    ("heldout/healthcare", HEALTHCARE, 24),
)


# --------------------------------------------------------------------------------------------
# Sentence generation
# --------------------------------------------------------------------------------------------


def _word_count(text: str) -> int:
    return len(normalise(text).split())


def _test_candidates(grammar: Grammar, rng: random.Random) -> Callable[[], str]:
    """Endless supply of distinct test sentences, rotating over the templates."""
    order = list(grammar.templates)
    rng.shuffle(order)
    seen: set[str] = set()
    state = {"i": 0}

    def next_sentence() -> str:
        for _ in range(10_000):
            template = order[state["i"] % len(order)]
            state["i"] += 1
            text = grammar.expand(template, rng, digits=False)
            key = normalise(text)
            if key in seen or not MIN_WORDS <= _word_count(text) <= MAX_WORDS:
                continue
            seen.add(key)
            return text
        raise RuntimeError(f"{grammar.name}: cannot find a new test sentence")

    return next_sentence


def build_corpus(grammar: Grammar, rng: random.Random, tests: list[str]) -> list[str]:
    """Grammar sentences (digits allowed) plus FAQ, minus anything equal to a test sentence."""
    banned = {normalise(t) for t in tests}
    lines: list[str] = []
    seen: set[str] = set()
    for _ in range(50 * CORPUS_GRAMMAR_LINES):
        if len(lines) >= CORPUS_GRAMMAR_LINES:
            break
        text = grammar.expand(rng.choice(grammar.templates), rng, digits=True)
        key = normalise(text)
        if key in seen or key in banned:
            continue
        seen.add(key)
        lines.append(text)
    for text in grammar.faq:
        key = normalise(text)
        if key not in seen and key not in banned:
            seen.add(key)
            lines.append(text)
    rng.shuffle(lines)
    assert len(lines) >= MIN_CORPUS_LINES, (grammar.name, len(lines))
    assert not banned & {normalise(line) for line in lines}, "corpus leaks a test utterance"
    return lines


# --------------------------------------------------------------------------------------------
# Audio
# --------------------------------------------------------------------------------------------


def synthesise(text: str, voice: str, speed: int, out: Path) -> float:
    """espeak-ng -> sox (16 kHz mono 16-bit, trimmed, 0.3 s padding). Returns the duration."""
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "espeak.wav"
        subprocess.run(
            ["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(raw), text],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            # -R: repeatable (fixed seeds), -D: no dither, so the output is byte-identical.
            [
                *("sox", "-R", "-D", str(raw)),
                *("-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", "-e", "signed-integer", str(out)),
                *("silence", "1", "0.01", "0.1%", "reverse"),  # trim leading silence ...
                *("silence", "1", "0.01", "0.1%", "reverse"),  # ... and trailing silence
                *("pad", str(PAD_SECONDS), str(PAD_SECONDS)),
            ],
            check=True,
            capture_output=True,
        )
    with wave.open(str(out), "rb") as wav:
        assert wav.getframerate() == SAMPLE_RATE, out
        assert wav.getnchannels() == 1, out
        assert wav.getsampwidth() == 2, out
        return wav.getnframes() / SAMPLE_RATE


@dataclass
class Utterance:
    id: str
    audio: str
    text: str
    voice: str
    speed: int
    seconds: float = field(compare=False)

    def manifest_line(self) -> str:
        record = {
            "id": self.id,
            "audio": self.audio,
            "text": self.text,
            "voice": self.voice,
            "speed": self.speed,
        }
        return json.dumps(record, ensure_ascii=False)


def build_domain(folder: str, grammar: Grammar, count: int) -> list[Utterance]:
    rng = random.Random(f"{SEED}:{grammar.name}")
    root = DATA / folder
    if root.exists():
        shutil.rmtree(root)
    (root / "audio").mkdir(parents=True)
    next_sentence = _test_candidates(grammar, rng)
    utterances: list[Utterance] = []
    for index in range(count):
        uid = f"{grammar.name}-{index + 1:03d}"
        voice = VOICES[index % len(VOICES)]
        speed = SPEEDS[index % len(SPEEDS)]
        out = root / "audio" / f"{uid}.wav"
        for _ in range(50):
            text = next_sentence()
            seconds = synthesise(text, voice, speed, out)
            if MIN_SECONDS <= seconds <= MAX_SECONDS:
                break
        else:
            raise RuntimeError(f"{uid}: no sentence fits {MIN_SECONDS}-{MAX_SECONDS} s")
        assert not re.search(r"[\d\-']", text), text
        utterances.append(Utterance(uid, f"audio/{uid}.wav", text, voice, speed, seconds))
        print(f"  {uid} {voice:<14} {speed} {seconds:4.2f}s  {text}")

    tests = [u.text for u in utterances]
    corpus = build_corpus(grammar, rng, tests)
    manifest = "".join(u.manifest_line() + "\n" for u in utterances)
    (root / "manifest.jsonl").write_text(manifest, encoding="utf-8")
    (root / "corpus.txt").write_text("".join(line + "\n" for line in corpus), encoding="utf-8")
    readme = _domain_readme(folder, grammar, utterances, corpus)
    (root / "README.md").write_text(readme, encoding="utf-8")
    return utterances


# --------------------------------------------------------------------------------------------
# READMEs
# --------------------------------------------------------------------------------------------


def _domain_readme(folder: str, grammar: Grammar, utts: list[Utterance], corpus: list[str]) -> str:
    role = (
        "the demo set"
        if folder.startswith("demo/")
        else "a held-out domain, used only by tests to show that adaptation is general"
    )
    total = sum(u.seconds for u in utts)
    voices = ", ".join(f"`{v}`" for v in dict.fromkeys(u.voice for u in utts))
    speeds = ", ".join(str(s) for s in sorted({u.speed for u in utts}))
    return f"""# {grammar.name.capitalize()} ({folder})

Domain: {grammar.description}. This is {role}.

* `audio/` -- {len(utts)} utterances, {total:.0f} s in total, 16 kHz mono 16-bit PCM WAV with
  ~{PAD_SECONDS} s of silence at both ends.
* `manifest.jsonl` -- one JSON object per utterance: `id`, `audio`, `text` (reference, numbers
  written as words), `voice`, `speed`.
* `corpus.txt` -- {len(corpus)} lines of related domain text for adapting the language model. It
  never contains a test utterance (compared after lower-casing, spelling out digits and
  stripping punctuation).

Voices (espeak-ng): {voices}; speeds (words per minute): {speeds}.

Generated by `python scripts/make_dataset.py` (espeak-ng, then sox to resample and pad). Test
sentences and corpus lines are drawn with a fixed seed from the same small sentence grammar; the
corpus also has {len(grammar.faq)} hand-written FAQ-style sentences. Do not edit by hand:
change the script and regenerate.
"""


DATA_README = """# Speech datasets

Synthetic speech used by the demo and the tests, committed so that neither needs a speech
synthesiser.

| Folder | Role |
| --- | --- |
| `demo/banking/` | the demo set |
| `heldout/travel/` | held-out domain, tests only |
| `heldout/healthcare/` | held-out domain, tests only |
| `canary/` | the example config's canary set, eight `demo/banking/` utterances; by hand |
| `lexicon/` | banking terms and synonyms for the error analysis; by hand |

Each domain folder holds:

* `audio/<id>.wav` -- 16 kHz, mono, 16-bit PCM WAV, 2-5 s long, with ~0.3 s of digital silence
  at the start and the end.
* `manifest.jsonl` -- one JSON object per line, for example

  ```json
  {example}
  ```

  `audio` is relative to the domain folder. `text` is the reference transcript in natural
  written form (capital letter, punctuation) with numbers written out as words, no digits.
  `voice` is the espeak-ng voice and `speed` its rate in words per minute.
* `corpus.txt` -- one sentence per line of related domain text, used to adapt the "custom"
  language model. It may use digits (`$200`, `5%`), which the text normaliser spells out. It is
  built from the same sentence grammar as the test utterances but never contains one of them
  (checked after lower-casing, spelling out digits and stripping punctuation).
* `README.md` -- what the domain is, counts, voices.

## Regenerating

```sh
sudo apt-get install espeak-ng sox   # Debian; only needed to regenerate
python scripts/make_dataset.py
```

The script uses a fixed seed and is deterministic for a given espeak-ng and sox version; it
rewrites `demo/`, `heldout/` and this README, and leaves `canary/` and `lexicon/` alone.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            print(f"error: {tool} not found (apt-get install espeak-ng sox)", file=sys.stderr)
            return 1
    DATA.mkdir(exist_ok=True)
    for folder, grammar, count in DOMAINS:
        print(f"{folder}:")
        utts = build_domain(folder, grammar, count)
        print(f"  {len(utts)} utterances, {sum(u.seconds for u in utts):.1f} s")
    example = (DATA / "demo/banking/manifest.jsonl").read_text().splitlines()[0]
    (DATA / "README.md").write_text(DATA_README.replace("{example}", example), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
