"""`synthetic`: a seeded, offline dataset in MS MARCO's shape, for the demo and the tests.

Each passage describes a unique combination of four concepts (a quality, an object, an action and
a place), each concept a group of real English synonyms of which the passage uses one, plus a rare
product code and a made-up name. Queries come in two kinds:

- lexical: the passage's code or name with one of its words, which BM25 matches exactly;
- paraphrase: the same four concepts through *other* members of their synonym groups, so no
  content word is shared with the passage and only a model that knows synonyms finds it.

Splits: `train` and `dev` (one relevant passage each) and `dl`, judged on a TREC-like graded
scale: 3 for the described passage, 2 for passages sharing three of its concepts, 1 for two, and
a few 0s. The numbers it yields say nothing about MS MARCO or the paper.
"""

from __future__ import annotations

import itertools

import numpy as np

from pipeline.data import Source, Split

SLOTS = {
    "quality": ["big large huge", "small little tiny", "quick fast rapid", "old ancient aged", "new modern novel",
                "cheap inexpensive affordable", "strong powerful sturdy", "quiet silent noiseless",
                "bright shiny luminous", "safe secure protected", "clean spotless immaculate", "heavy weighty hefty"],
    "object": ["car automobile vehicle", "boat ship vessel", "house home dwelling", "doctor physician medic",
               "lawyer attorney counsel", "shop store boutique", "phone telephone handset", "film movie motion-picture",
               "road street highway", "child kid youngster", "bag sack pouch", "couch sofa settee",
               "gift present offering", "job occupation profession", "river stream creek"],
    "action": ["buy purchase acquire", "fix repair mend", "start begin commence", "help assist aid",
               "build construct assemble", "wash scrub cleanse", "choose select pick", "sell vend retail",
               "check inspect examine", "hoard stash stockpile", "find locate discover", "protect guard shield"],
    "place": ["city town municipality", "village hamlet settlement", "harbor port dock", "forest woods woodland",
              "desert wasteland badlands", "mountain peak summit", "island isle atoll", "valley dale glen",
              "coast shore seaside", "farm ranch homestead"],
}
GROUPS = {slot: [group.split() for group in groups] for slot, groups in SLOTS.items()}
ORDER = ("quality", "object", "action", "place")
OPENINGS = [
    "The {quality} {object} from the {place} is where people usually {action} things.",
    "In the {place}, a {quality} {object} is the usual way to {action} goods.",
    "Residents of the {place} {action} almost everything with a {quality} {object}.",
    "A {quality} {object} near the {place} lets anyone {action} what they need.",
]
DETAILS = [
    "{name} first wrote about it, and its product code {code} appears on every label.",
    "Catalogues list it under code {code}, a name chosen by {name} long ago.",
    "Its code {code} was registered by {name} in the first ledger.",
]
FILLERS = [
    "Visitors often mention it in their reviews.", "Local records note several changes over the years.",
    "Opinions about it differ from one family to another.", "Some say the tradition goes back generations.",
    "Prices vary with the season and with demand.", "Guides recommend arriving early in the morning.",
    "Few outsiders know the full story behind it.", "The local newspaper covered it twice last year.",
    "Many photographs of it hang in the library.", "Children learn about it at school.",
    "It remains a common topic of conversation.", "Experts disagree on the details of its history.",
]
PARAPHRASES = ["how to {action} a {quality} {object} in the {place}", "{quality} {object} to {action} near {place}",
               "where can i {action} with a {quality} {object} by the {place}",
               "best {quality} {object} for those who {action} in a {place}"]
LEXICAL = ["{code} {object}", "{name} {object} {place}", "what is {code}", "{name} {action} {object}"]
SYLLABLES = "ka lo mi ren dor sa vel tu nor bi ra zen qua li mo fen tar ix".split()
STOPWORDS = frozenset("a an the in of to for and is it its by on at with from near where how can i who what be".split())


def _concepts(n_passages: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 4) group indices, every row a distinct combination."""
    sizes = [len(GROUPS[slot]) for slot in ORDER]
    total = int(np.prod(sizes))
    if n_passages > total:
        raise ValueError(f"at most {total} distinct synthetic passages, asked for {n_passages}")
    picks = rng.choice(total, size=n_passages, replace=False)
    return np.stack(np.unravel_index(picks, sizes), axis=1)


def synthetic_source(seed: int = 13, n_passages: int = 3000, n_train: int = 2000, n_dev: int = 200,
                     n_dl: int = 30) -> Source:
    """Generate the dataset in memory; the same seed always gives the same bytes."""
    if n_train + n_dev + n_dl > n_passages:
        raise ValueError(f"{n_train + n_dev + n_dl} queries need as many passages; only {n_passages} asked for")
    rng = np.random.default_rng(seed)
    concepts = _concepts(n_passages, rng)
    words = rng.integers(0, 3, size=(n_passages, 4))  # which synonym each passage uses
    codes = [f"{chr(65 + a)}{chr(65 + b)}-{n}" for a, b, n in zip(
        rng.integers(0, 26, n_passages), rng.integers(0, 26, n_passages), rng.permutation(9000)[:n_passages] + 1000,
        strict=True)]
    names = ["".join(rng.choice(SYLLABLES, size=3)).capitalize() for _ in range(n_passages)]
    passages = []
    for i in range(n_passages):
        slots = {slot: GROUPS[slot][concepts[i, j]][words[i, j]] for j, slot in enumerate(ORDER)}
        fillers = rng.choice(len(FILLERS), size=rng.integers(3, 7), replace=False)
        text = " ".join([OPENINGS[rng.integers(len(OPENINGS))].format(**slots),
                         DETAILS[rng.integers(len(DETAILS))].format(name=names[i], code=codes[i]),
                         *(FILLERS[f] for f in fillers)])
        passages.append((str(i), text[0].upper() + text[1:]))

    targets = rng.permutation(n_passages)
    splits, offset = {}, 0
    for name, count, base in (("train", n_train, 1_000_000), ("dev", n_dev, 2_000_000), ("dl", n_dl, 3_000_000)):
        queries, qrels = {}, {}
        for k, target in enumerate(targets[offset:offset + count]):
            qid = str(base + k)
            queries[qid] = _query(int(target), k % 2 == 0, concepts, words, codes, names, rng)
            qrels[qid] = _graded(int(target), concepts, rng) if name == "dl" else {str(target): 1}
        splits[name] = Split(queries, qrels, origin=f"synthetic(seed={seed}):{name}")
        offset += count
    return Source(collection=lambda: iter(passages), collection_origin=f"synthetic(seed={seed})", splits=splits,
                  notes=[f"synthetic seed {seed}: {n_passages} passages; half the queries lexical, half paraphrased"])


def _query(target: int, lexical: bool, concepts: np.ndarray, words: np.ndarray, codes: list[str], names: list[str],
           rng: np.random.Generator) -> str:
    if lexical:
        slots = {slot: GROUPS[slot][concepts[target, j]][words[target, j]] for j, slot in enumerate(ORDER)}
        return LEXICAL[rng.integers(len(LEXICAL))].format(code=codes[target], name=names[target].lower(), **slots)
    # Another member of each synonym group than the passage's own word.
    slots = {slot: GROUPS[slot][concepts[target, j]][(words[target, j] + rng.integers(1, 3)) % 3]
             for j, slot in enumerate(ORDER)}
    return PARAPHRASES[rng.integers(len(PARAPHRASES))].format(**slots).replace("-", " ")


def _graded(target: int, concepts: np.ndarray, rng: np.random.Generator) -> dict[str, int]:
    """TREC-style graded judgements for a dl query: 3 / 2 / 1 by shared concepts, a few 0s."""
    shared = (concepts == concepts[target]).sum(axis=1)
    judged = {str(target): 3}
    for grade, overlap, cap in ((2, 3, 6), (1, 2, 5), (0, 0, 4)):
        pool = np.flatnonzero(shared == overlap)
        for pid in rng.choice(pool, size=min(cap, len(pool)), replace=False) if len(pool) else []:
            judged[str(pid)] = grade
    return judged


def content_words(text: str) -> set[str]:
    """Lower-cased words that are not stopwords (punctuation stripped): what lexical overlap means here."""
    tokens = (token.strip(".,:;!?").lower() for token in text.split())
    return {token for token in tokens if token and token not in STOPWORDS}


assert all(len(group) == 3 for group in itertools.chain.from_iterable(GROUPS.values())), "three synonyms per group"
