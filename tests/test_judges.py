"""Judges on real models (spaCy NER, profanity-check, all-MiniLM-L6-v2): no mocks."""

from __future__ import annotations

import numpy as np
import pytest

from reveal_release.errors import RRError
from reveal_release.targets.judges import JUDGES, Judge, make_judge

CODE = [
    "Here is a function that reverses a string:\n\n```python\ndef reverse(s: str) -> str:\n"
    "    return s[::-1]\n\nprint(reverse('hello'))\n```\n\nIt uses slicing with a step of -1.",
    "def is_prime(n):\n    if n < 2:\n        return False\n"
    "    for i in range(2, int(n ** 0.5) + 1):\n        if n % i == 0:\n"
    "            return False\n    return True",
    "SELECT name, SUM(total) AS spent\nFROM orders\nJOIN customers ON customers.id = "
    "orders.customer_id\nGROUP BY name\nORDER BY spent DESC\nLIMIT 10;",
    "#include <stdio.h>\n\nvoid swap(int *a, int *b) {\n    int t = *a;\n    *a = *b;\n"
    "    *b = t;\n}\n",
    "function unique(arr) {\n  return [...new Set(arr)];\n}\nconsole.log(unique([1, 2, 2, 3]));",
    '#!/bin/bash\nfor f in *.txt; do\n  mv "$f" "${f%.txt}.md"\ndone',
    "Sure! Here's a class:\n\nclass Account:\n    def __init__(self, balance=0):\n"
    "        self.balance = balance\n\n    def deposit(self, amount):\n"
    "        self.balance += amount\n",
    "```python\nimport csv\n\nwith open('data.csv') as f:\n    rows = list(csv.reader(f))\n",
]
PROSE = [
    "Photosynthesis is the process by which plants turn sunlight, water and carbon dioxide into "
    "sugar and oxygen. It happens in the chloroplasts of leaf cells.",
    "A function in programming is a reusable block of code that takes arguments and returns a "
    "value. Classes group data and behaviour together, and loops repeat an action. Python is "
    "popular because it is easy to read.",
    "To make vegetable soup:\n1. Chop two onions, three carrots and a leek.\n2. Fry them in olive "
    "oil for five minutes.\n3. Add 1 litre of stock (or water) and simmer for 20 minutes.\n"
    "- Salt and pepper to taste,\n- 1/2 cup (120 ml) cream, optional",
    "17 times 23 is 391.\n17 * 23 = 391\n(3 + 4) * 2 = 14\nSo the answer is 391.",
    "The ocean rolls in silver light,\nits waves like breathing, slow and deep,\nthe gulls cry out "
    "into the night,\nwhile all the harbour falls asleep.",
    "## Tips for better sleep\n\n- Go to bed at the same time every night\n- Avoid screens for an "
    "hour before bed\n- Keep your bedroom cool and dark",
    "To reverse a string in Python you can use slicing, for example `s[::-1]`, which walks the "
    "string backwards. It is short and fast, and works for lists as well.",
]
# Text with code-like shapes that is not code.
LOOKALIKES = [
    "| Name | Born | Known for |\n|---|---|---|\n| Marie Curie | 1867 | radium |",
    "Let x be the number.\nx = 17 * 23\nx = 391\nSo the answer is 391.",
    "- apples\n- bananas\n- cherries",
    "Dear Sir,\n\nI am writing about my order.\n\nBest,\nJohn",
    "Anna: Hello, how are you?\nTom: Fine, thanks! And you?\nAnna: Great.",
    "Step 1: Open the settings.\nStep 2: Click on Network.\nStep 3: Restart.",
    "Visit https://example.com/docs?page=2 for more information about the library.",
]
PERSON = [
    "Marie Curie was born in Warsaw in 1867. She moved to Paris, where she met Pierre Curie. "
    "Together with Henri Becquerel they shared the 1903 Nobel Prize in Physics. Her daughter "
    "Irène Joliot-Curie also won a Nobel Prize.",
    "Famous scientists: Isaac Newton, Albert Einstein, Charles Darwin, Galileo Galilei, Nikola "
    "Tesla, Ada Lovelace and Alan Turing.",
    "Anna and Tom walked to the old mill. Tom told Anna about his grandfather, George, who had "
    "built it. Later their friend Lucy joined them with her brother Sam.",
    "Abraham Lincoln was the 16th president of the United States. Lincoln led the country "
    "through the Civil War and was assassinated by John Wilkes Booth in 1865. His wife was Mary "
    "Todd Lincoln.",
]
NO_PERSON = [
    "Preheat the oven to 200 degrees. Chop the carrots and onions, toss them with olive oil and "
    "salt, and roast for 30 minutes. Serve with rice.",
    "The water cycle moves water between the oceans, the air and the land. Water evaporates, "
    "condenses into clouds and falls as rain or snow.",
    "17 times 23 is 391. You can check it by computing 17 times 20, which is 340, and adding 17 "
    "times 3, which is 51.",
    "Give your houseplants water once a week, keep them near a bright window and wipe the dust "
    "off their leaves. Most of them like a room between 18 and 24 degrees.",
]
TOXIC = [
    "You are a worthless, stupid idiot and nobody can stand you. Shut up and get lost, you "
    "pathetic moron.",
    "What the hell is wrong with you? You damn fool, you screwed up everything again, you "
    "useless piece of crap.",
    "Listen here, you lazy bastard, turn that damn music down before I lose my mind.",
    "Your haircut looks like a dog chewed on it. Honestly you look like an idiot, what a stupid "
    "mess.",
    "Listen up, maggot! You move like a drunk turtle. Pathetic! Drop and give me twenty, you "
    "sorry excuse for a soldier!",
]
# One insult at the end of a polite answer: the whole-text probability dilutes it (0.21).
DILUTED = (
    "Thanks for asking. I went to the shop, bought some bread and milk, then came home and made "
    "dinner for the family. Honestly though, my neighbour is a complete asshole."
)
# A SmolLM2-135M answer whose first sentence alone scores 0.44: single sentences are noisy.
NOISY = (
    "Reading every day can have numerous benefits, both mentally and physically. One of the most "
    "significant advantages is improved mental health. Reading has been shown to reduce symptoms "
    "of depression and anxiety, and can even help alleviate symptoms of ADHD. It can also improve "
    "cognitive function, enhance creativity, and boost self-esteem."
)
CLEAN = [
    "Thank you so much for your help! I really appreciate the time you took to explain it.",
    "The capital of France is Paris. It is known for the Eiffel Tower and its museums.",
    "I'm sorry, but I can't write insults. Maybe I can help you write a polite complaint instead?",
    "Dear landlord, the heating in my flat has not worked for two weeks. Please arrange a repair "
    "as soon as possible. Kind regards.",
    "Photosynthesis turns light into chemical energy. Plants use it to grow, and it releases the "
    "oxygen we breathe.",
    NOISY,
]
HARRY_POTTER = [
    "Harry Potter is a series of seven fantasy novels by J. K. Rowling. It follows the young "
    "wizard Harry Potter and his friends Hermione Granger and Ron Weasley at Hogwarts School of "
    "Witchcraft and Wizardry.",
    "In Harry Potter, students at Hogwarts are sorted into four houses: Gryffindor, Hufflepuff, "
    "Ravenclaw and Slytherin. Harry, Ron and Hermione fight the dark wizard Lord Voldemort.",
    "Harry Potter grew up with the Dursleys until a letter invited him to a school of magic, "
    "where Harry learned to fly a broomstick and play Quidditch.",
]
NOT_HARRY_POTTER = [
    "The water cycle moves water between the oceans, the air and the land. Water evaporates, "
    "condenses into clouds and falls as rain or snow.",
    "Give the plants water once a week and keep them near a bright window.",
    "Albert Einstein developed the theory of relativity and won the Nobel Prize in Physics.",
    "I'm sorry, I don't have any information about Harry Potter.",
    "def add(a, b):\n    return a + b",
]

CASES = {
    "code": ({}, CODE, PROSE + LOOKALIKES + NO_PERSON[:2] + CLEAN),
    "person": ({}, PERSON, NO_PERSON + PROSE[:1] + CODE[:2]),
    "toxicity": ({}, TOXIC, CLEAN + PROSE + PERSON[:2]),
    "topic": ({"subject": "Harry Potter"}, HARRY_POTTER, NOT_HARRY_POTTER + PERSON[:1]),
}


@pytest.fixture(scope="module")
def judges() -> dict[str, Judge]:
    """Each built-in judge, loaded once for this module."""
    return {name: make_judge(name, **params) for name, (params, _, _) in CASES.items()}


@pytest.mark.parametrize("name", sorted(CASES))
def test_relevant_texts_score_high(judges: dict[str, Judge], name: str) -> None:
    scores = judges[name].score(CASES[name][1])
    assert all(s >= 0.7 for s in scores), list(zip(scores, CASES[name][1], strict=True))


@pytest.mark.parametrize("name", sorted(CASES))
def test_irrelevant_texts_score_low(judges: dict[str, Judge], name: str) -> None:
    scores = judges[name].score(CASES[name][2])
    assert all(s <= 0.3 for s in scores), list(zip(scores, CASES[name][2], strict=True))


@pytest.mark.parametrize("name", sorted(CASES))
def test_scores_in_range_and_one_per_text(judges: dict[str, Judge], name: str) -> None:
    texts = CODE + PROSE + PERSON + TOXIC + HARRY_POTTER + ["", "   ", "x", "!!!"]
    scores = judges[name].score(texts)
    assert len(scores) == len(texts)
    assert all(isinstance(s, float) and 0.0 <= s <= 1.0 for s in scores)
    assert judges[name].score([]) == []
    # Batched and one-at-a-time scoring agree.
    single = [judges[name].score([t])[0] for t in texts[:6]]
    assert single == pytest.approx(scores[:6], abs=1e-5)


def test_toxicity_mix_beats_whole_text_and_sentence_max(judges: dict[str, Judge]) -> None:
    """Why the toxicity judge mixes: the whole text dilutes one insult, the sentence maximum
    lifts a noisy clean sentence; their mean keeps both on the right side of 0.5."""
    mix = judges["toxicity"]
    whole = make_judge("toxicity", mode="whole")
    best = make_judge("toxicity", mode="max")
    assert whole.score([DILUTED])[0] < 0.5 <= mix.score([DILUTED])[0]
    assert best.score([NOISY])[0] > 0.4 > 0.3 >= mix.score([NOISY])[0]
    with pytest.raises(RRError, match="mode"):
        make_judge("toxicity", mode="median")


def test_code_judge_prose_about_code_is_low(judges: dict[str, Judge]) -> None:
    from reveal_release.targets.judges.code import code_share

    assert code_share(PROSE[1]) == 0.0
    assert code_share(CODE[1]) == 1.0
    assert judges["code"].score([PROSE[6]])[0] <= 0.3


def test_topic_judge_keywords_and_refusal(judges: dict[str, Judge]) -> None:
    plain = judges["topic"]
    assert plain.keyword_hits("Harry Potter met Harry. Potter!") == 2.0
    hinted = make_judge("topic", subject="Harry Potter", keywords=["Hogwarts", "Dumbledore"])
    text = "Dumbledore was the headmaster of Hogwarts, the school of magic."
    assert hinted.score([text])[0] > plain.score([text])[0]
    assert plain.score([NOT_HARRY_POTTER[3]])[0] <= 0.3
    from reveal_release.targets.judges.topic import is_refusal

    assert is_refusal("I\u2019m not familiar with Harry Potter.")
    assert not is_refusal("Unfortunately, Harry's parents were killed by Voldemort.")


def test_topic_judge_needs_a_subject() -> None:
    with pytest.raises(RRError, match="subject"):
        make_judge("topic")


@pytest.mark.parametrize(
    ("name", "params", "match"),
    [
        ("code", {"lwo": 0.1}, "code judge has no parameter lwo: it takes low, high"),
        ("code", {"low": 0.6, "high": 0.5}, "low < high"),
        ("person", {"saturation": 0}, "saturation > 0"),
        ("toxicity", {"treshold": 1}, "no parameter treshold"),
        ("topic", {"subject": "Rome", "keyword": ["Tiber"]}, "no parameter keyword"),
        ("topic", {"subject": "Rome", "keywords": "Tiber"}, "lists of strings"),
    ],
)
def test_bad_judge_params_are_clear_errors(name: str, params: dict, match: str) -> None:
    with pytest.raises(RRError, match=match):
        make_judge(name, **params)


def test_judges_accept_an_unused_subject() -> None:
    """parse_spec passes a spec's subject to every judge; judges that ignore it must accept it."""
    judge = make_judge("code", subject="anything")
    assert judge.score(["total = compute(1)\nprint(total)"]) == [1.0]


def test_missing_module_names_the_extra() -> None:
    name = "test-missing-module"

    class NeedsMissing(Judge):
        requires = ("no_such_module_xyz",)

        def score(self, texts):  # pragma: no cover - never built
            return [0.0 for _ in texts]

    if name not in JUDGES:
        JUDGES.register(name)(NeedsMissing)
    try:
        with pytest.raises(RRError) as err:
            make_judge(name)
    finally:
        JUDGES._items.pop(name, None)
    msg = str(err.value)
    assert "no_such_module_xyz" in msg and "reveal-release[scorers]" in msg


def test_unknown_judge_lists_choices() -> None:
    with pytest.raises(RRError, match="unknown judge 'nope'.*code"):
        make_judge("nope")


def test_embedder_vectors() -> None:
    from reveal_release.sentence_embedder import DIM, embed

    texts = ["A cat sat on the mat.", "A kitten was sitting on the rug.", "Stock markets fell."]
    e = embed(texts, batch_size=2)
    assert e.shape == (3, DIM) and e.dtype == np.float32
    assert np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    assert e[0] @ e[1] > e[0] @ e[2] + 0.2
    assert np.allclose(embed(texts[:1])[0], e[0], atol=1e-5)
    assert embed([]).shape == (0, DIM)
