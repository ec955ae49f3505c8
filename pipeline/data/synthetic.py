"""`synthetic`: an offline MS MARCO-shaped dataset on which both BM25 and a dense encoder can win.

Each passage describes a unique combination of six concepts (who, action, quality, object,
occasion, place). A concept is a group of real English synonyms and the passage uses one member
of each, plus a rare product code and, for half the passages, a made-up maker name. Passages come
in families that share most concepts, which gives near misses to rank below the target and to grade
in `dl`. Half the queries are lexical (the code or name plus a word of the passage: exact matching
wins); the other half paraphrase the concepts with other members of the groups, sharing no content
word with the passage, so that only semantic matching finds it.
"""

from __future__ import annotations

import re

import numpy as np

from pipeline.data import Source, Split

# Slots in column order: person, verb, adjective, object noun, purpose, place. Groups are separated
# by "|", members by spaces. No word is in two groups, and no template word shares a stem with a
# lexicon word, so a paraphrase can avoid every content word of its passage (even after stemming).
_LEXICON_TEXT = (
    "doctor physician medic|lawyer attorney solicitor|teacher instructor tutor|child kid youngster|"
    "student pupil learner|chef cook|policeman cop constable|pilot aviator|sailor seaman mariner|"
    "soldier trooper|mother mom mum|father dad|boss manager supervisor|friend pal buddy|"
    "customer client patron|author writer novelist",
    "repair fix mend|buy purchase acquire|begin start commence|clean wash scrub|build construct assemble|"
    "choose select pick|carry transport haul|protect guard shield|find locate discover|"
    "destroy demolish wreck|move shift relocate|inspect check examine|hide conceal|improve enhance upgrade|"
    "rent hire lease|discard ditch dump|measure gauge",
    "big large huge|small little tiny|quick fast rapid|old antique vintage|modern contemporary|"
    "cheap inexpensive affordable|expensive costly pricey|strong sturdy robust|broken damaged faulty|"
    "quiet silent|dirty filthy grimy|heavy weighty hefty|beautiful pretty lovely|wet damp soggy|safe secure",
    "car automobile|bicycle bike|boat ship vessel|sofa couch settee|lamp lantern|phone telephone handset|"
    "computer pc|television tv telly|jacket coat|bag sack pouch|rug carpet mat|stove oven|"
    "refrigerator fridge|clock timepiece|saucepan pan skillet|bucket pail|knife blade|"
    "photograph photo picture|fence railing|dog hound canine|cat kitten feline|horse steed stallion|"
    "lorry truck|sweater jumper pullover",
    "wedding marriage|journey trip voyage|holiday vacation getaway|party celebration festivity|"
    "meeting conference|race contest competition|dinner supper feast|job occupation career|hobby pastime|"
    "emergency crisis|business enterprise company|gift present|funeral burial|concert recital",
    "harbour port dock|city metropolis|shop store boutique|garden yard backyard|forest woodland|"
    "hospital clinic infirmary|road street avenue|factory plant mill|village hamlet|beach shore seaside|"
    "mountain peak summit|office bureau|river stream creek|airport airfield|restaurant eatery diner|"
    "hotel inn motel|church chapel|farm ranch|prison jail|cellar basement|house home residence",
)
_LEXICON = tuple(tuple(tuple(group.split()) for group in slot.split("|")) for slot in _LEXICON_TEXT)
_WORDS = frozenset(word for slot in _LEXICON for group in slot for word in group)
_PERSON, _VERB, _ADJ, _NOUN, _PURPOSE, _PLACE = range(6)

_MAIN = (
    "{aP} in {aL} explains how to {V} {aA} {N} for {aU}.",
    "This guide shows how {aP} can {V} {aA} {N} at {aL} ahead of {aU}.",
    "Here {aP} describes the way to {V} {aA} {N} in {aL} while getting ready for {aU}.",
    "When {aU} is coming up, {aP} from {aL} may need to {V} {aA} {N}; these notes explain how.",
)
_UNNAMED = (
    "The {N} discussed here is the {C} model.",
    "These notes cover the {C}, {aA} {N} that many readers own.",
    "Model {C} is the example used throughout.",
)
_NAMED = (
    "The {C} {N} is made by {M}, a workshop known for careful designs.",
    "{M} sells the {C}, and the same steps apply to similar models.",
    "The example throughout is the {C} from {M}.",
)
_DETAIL = (
    "To {V} the {N} properly, the {P} recommends taking time and working slowly.",
    "Anyone planning {aU} at {aL} will value this advice about the {N}.",
    "The {P} notes that {aA} {N} needs more care than most.",
    "Most of the effort goes into getting ready to {V} it without mistakes.",
)
_FILLERS = (
    "Readers often say the instructions are clear and easy to follow.",
    "Local rules differ, so it is worth reading the regulations first.",
    "The whole process usually takes about {n} hours.",
    "Charges depend on the region and on the season.",
    "Some people prefer to ask an expert before trying it themselves.",
    "A second opinion can save a lot of time and money.",
    "Drawings of each step are included at the end.",
    "Similar advice appears in earlier manuals as well.",
    "The tips were first published in {y} and revised {n} times since.",
    "Feedback from readers has been mostly positive.",
    "Nothing here replaces professional advice.",
    "Keep the original receipt and any spare parts together.",
    "Weather can make the task harder than expected.",
    "About {n}0 percent of readers finish within a day.",
    "Review the list of tools first.",
    "This page is updated every few months.",
)
_SUFFIXES = ("specs", "manual", "price", "review", "parts", "warranty", "problems", "dimensions")
_CONSONANTS, _VOWELS, _LETTERS = tuple("bdfgklmnprstvz"), tuple("aeiou"), tuple("ABCDEFGHJKLMNPRSTVWXZ")
# Codes and names must be rare tokens: never a lexicon or template word.
_RESERVED = _WORDS | frozenset(re.findall(r"[a-z]+", " ".join(_MAIN + _UNNAMED + _NAMED + _DETAIL + _FILLERS
                                                               + _SUFFIXES).lower()))
# Half the queries of every split are lexical; the rest paraphrase.
_LEXICAL_SHARE = 0.5
# A new passage copies the concepts of an earlier one and changes one or two slots this often.
_FAMILY_SHARE = 0.6
# Passages use a group's first (commonest) word this often, so its other members are mostly query
# vocabulary, as in real search logs: with fewer passages holding the paraphrase's exact words, the
# synonyms decide (zero-shot all-MiniLM-L6-v2, dev paraphrases: MRR@10 0.35, against 0.21 when
# passages pick members uniformly; BM25 scores 0.0 either way).
_COMMON_SHARE = 0.9
_MIN_WORDS, _MAX_WORDS = 40, 90


def _a(word: str) -> str:
    """The word with its indefinite article."""
    return ("an " if word[0] in "aeiou" else "a ") + word


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def _member(rng: np.random.Generator, size: int) -> int:
    """Which member of a group of `size` words a passage uses: mostly the first."""
    return 0 if rng.random() < _COMMON_SHARE else int(rng.integers(1, size))


def _concepts(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Group index and member index per passage and slot; every row of groups is unique."""
    sizes = [len(slot) for slot in _LEXICON]
    groups, members = np.zeros((n, 6), dtype=np.int64), np.zeros((n, 6), dtype=np.int64)
    seen: set[tuple[int, ...]] = set()
    for i in range(n):
        while True:
            if i and rng.random() < _FAMILY_SHARE:
                base = int(rng.integers(i))
                row, member = groups[base].copy(), members[base].copy()
                for slot in rng.choice(6, size=int(rng.integers(1, 3)), replace=False):
                    row[slot] = (row[slot] + rng.integers(1, sizes[slot])) % sizes[slot]
                    member[slot] = _member(rng, len(_LEXICON[slot][row[slot]]))
            else:
                row = np.array([rng.integers(size) for size in sizes])
                member = np.array([_member(rng, len(_LEXICON[s][row[s]])) for s in range(6)])
            if tuple(row.tolist()) not in seen:
                break
        seen.add(tuple(row.tolist()))
        groups[i], members[i] = row, member
    return groups, members


def _codes(rng: np.random.Generator, n: int) -> list[str]:
    """Product codes like KX-4821 whose numbers are distinct and above every year in the fillers,
    so that each code holds a token found in its passage only."""
    width = 4
    while 7 * 10 ** (width - 1) < n:  # numbers from 3000..9999, 30000..99999, ...: enough for n
        width += 1
    numbers = rng.choice(np.arange(3 * 10 ** (width - 1), 10**width), size=n, replace=False)
    codes = []
    for number in numbers.tolist():
        letters = _pick(rng, _LETTERS) + _pick(rng, _LETTERS)
        while letters.lower() in _RESERVED:  # not "PC" or "AT": the letters split off as a token of their own
            letters = _pick(rng, _LETTERS) + _pick(rng, _LETTERS)
        codes.append(f"{letters}-{number}")
    return codes


def _name(rng: np.random.Generator, taken: set[str]) -> str:
    """A new made-up maker name of two or three syllables that is no lexicon or template word."""
    while True:
        syllables = [_pick(rng, _CONSONANTS) + _pick(rng, _VOWELS) for _ in range(int(rng.integers(2, 4)))]
        name = ("".join(syllables) + _pick(rng, ("", "n", "r", "x"))).capitalize()
        if name not in taken and name.lower() not in _RESERVED:
            taken.add(name)
            return name


def _passage(rng: np.random.Generator, words: list[str], code: str, name: str | None) -> str:
    """Main sentence first, then the product, detail and filler sentences in random order."""
    fields = dict(zip("PVANUL", words, strict=True), C=code, M=name)
    fields.update(aP=_a(words[_PERSON]), aA=_a(words[_ADJ]), aU=_a(words[_PURPOSE]), aL=_a(words[_PLACE]))
    body = [_pick(rng, _NAMED if name else _UNNAMED).format(**fields), _pick(rng, _DETAIL).format(**fields)]
    main = _pick(rng, _MAIN).format(**fields)
    count, target = sum(len(s.split()) for s in [main, *body]), int(rng.integers(_MIN_WORDS, _MAX_WORDS + 1))
    for index in rng.permutation(len(_FILLERS)):
        if count >= target:
            break
        sentence = _FILLERS[index].format(n=int(rng.integers(2, 10)), y=int(rng.integers(1990, 2025)))
        if count + len(sentence.split()) <= _MAX_WORDS:
            body.append(sentence)
            count += len(sentence.split())
    sentences = [main] + [body[i] for i in rng.permutation(len(body))]
    return " ".join(s[0].upper() + s[1:] for s in sentences)


def _paraphrase(rng: np.random.Generator, target: int, groups: np.ndarray, members: np.ndarray) -> str:
    """Name the target's concepts with other synonyms, using as many slots as make it the only match."""
    order = [_NOUN, _VERB] + [int(s) for s in rng.permutation([_PERSON, _ADJ, _PURPOSE, _PLACE])]
    matches, words = np.ones(len(groups), dtype=bool), {}
    for slot in order:
        group = _LEXICON[slot][groups[target, slot]]
        words[slot] = _pick(rng, tuple(w for k, w in enumerate(group) if k != members[target, slot]))
        matches &= groups[:, slot] == groups[target, slot]
        if len(words) >= 4 and matches.sum() == 1:
            break
    thing = f"{_a(words[_ADJ])} {words[_NOUN]}" if _ADJ in words else _a(words[_NOUN])
    if _PERSON in words:
        lead = f"{_pick(rng, ('how can', 'how does', 'how should'))} {_a(words[_PERSON])} "
    else:
        lead = _pick(rng, ("how to ", "where to ", "how do i ", ""))
    tails = []
    if _PLACE in words:
        tails.append(f"{_pick(rng, ('in', 'at'))} {_a(words[_PLACE])}")
    if _PURPOSE in words:
        tails.append(f"{_pick(rng, ('for', 'before'))} {_a(words[_PURPOSE])}")
    tails = [tails[i] for i in rng.permutation(len(tails))]
    return " ".join([f"{lead}{words[_VERB]} {thing}", *tails])


def _lexical(rng: np.random.Generator, words: list[str], code: str, name: str | None) -> str:
    """The passage's code or maker name, one of its own concept words, and maybe a product suffix."""
    code = code.lower() if rng.random() < 0.3 else code
    name = name.lower() if name and rng.random() < 0.5 else name
    key = name if name and rng.random() < 0.5 else code
    word = words[_NOUN] if rng.random() < 0.6 else words[int(rng.integers(6))]
    suffix = _pick(rng, _SUFFIXES)
    frames = [f"{key} {word}", f"{key} {word} {suffix}", f"{word} {key} {suffix}"]
    if name:
        frames.append(f"{name} {code} {word}")
    return _pick(rng, tuple(frames))


def _graded(rng: np.random.Generator, target: int, groups: np.ndarray) -> dict[str, int]:
    """TREC DL-style judgements: 3 the target, 2 shares >= 4 of 6 concepts, 1 shares 3, 0 shares 2."""
    shared = (groups == groups[target]).sum(axis=1)
    shared[target] = -1
    judged = {str(target): 3}
    for grade, pool, cap in ((2, shared >= 4, 5), (1, shared == 3, 4), (0, shared == 2, 3)):
        for pid in rng.permutation(np.flatnonzero(pool))[:cap]:
            judged[str(int(pid))] = grade
    return judged


def synthetic_source(seed: int = 13, n_passages: int = 3000, n_train: int = 2000, n_dev: int = 200,
                     n_dl: int = 30) -> Source:
    """Generate the dataset; the same seed always gives byte-identical passages, queries and qrels."""
    if n_passages < 1 or min(n_train, n_dev, n_dl) < 0:
        raise ValueError("synthetic: n_passages must be positive and query counts non-negative")
    rng = np.random.default_rng(seed)
    groups, members = _concepts(rng, n_passages)
    codes, taken = _codes(rng, n_passages), set()
    names = [_name(rng, taken) if rng.random() < 0.5 else None for _ in range(n_passages)]
    words = [[_LEXICON[s][groups[i, s]][members[i, s]] for s in range(6)] for i in range(n_passages)]
    passages = [(str(i), _passage(rng, words[i], codes[i], names[i])) for i in range(n_passages)]

    def ask(target: int, seen: set[str]) -> str:
        for _ in range(100):
            if rng.random() < _LEXICAL_SHARE:
                text = _lexical(rng, words[target], codes[target], names[target])
            else:
                text = _paraphrase(rng, target, groups, members)
            if text not in seen:
                seen.add(text)
                return text
        raise ValueError(f"synthetic: cannot write distinct queries for pid {target}; "
                         f"ask fewer queries of the {n_passages} passages")

    # Targets run through a permutation, so train, dev and dl ask about different passages while
    # there are enough of them.
    order = rng.permutation(n_passages)
    splits, start = {}, 0
    for split, count, first_qid in (("train", n_train, 1_000_000), ("dev", n_dev, 2_000_000),
                                    ("dl", n_dl, 3_000_000)):
        queries, qrels, seen = {}, {}, set()
        for offset in range(count):
            target = int(order[(start + offset) % n_passages])
            text = ask(target, seen)
            qid = str(first_qid + offset)
            queries[qid] = text
            qrels[qid] = _graded(rng, target, groups) if split == "dl" else {str(target): 1}
        splits[split] = Split(queries, qrels, origin=f"synthetic(seed={seed}) {split}")
        start += count
    notes = [f"synthetic MS MARCO-shaped data, seed {seed}: {n_passages} passages over "
             f"{sum(len(slot) for slot in _LEXICON)} English synonym groups in 6 concept slots",
             "queries: half lexical (product code or maker name; exact matching wins), half paraphrases "
             "(other synonyms, no shared content word; semantic matching wins)",
             "dl qrels: 3 target, 2 shares >= 4 of 6 concepts, 1 shares 3, 0 shares 2"]
    return Source(collection=lambda: iter(passages), collection_origin=f"synthetic(seed={seed})",
                  splits=splits, notes=notes)
