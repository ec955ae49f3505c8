from collections import Counter

from pipeline.data.synthetic import content_words, synthetic_source


def materialise(source):
    return list(source.collection()), {name: (s.queries, s.qrels) for name, s in source.splits.items()}


def test_same_seed_same_data_other_seed_other_data():
    assert materialise(synthetic_source(seed=3, n_passages=300, n_train=50, n_dev=20, n_dl=5)) == materialise(
        synthetic_source(seed=3, n_passages=300, n_train=50, n_dev=20, n_dl=5))
    assert materialise(synthetic_source(seed=3, n_passages=300, n_train=50, n_dev=20, n_dl=5)) != materialise(
        synthetic_source(seed=4, n_passages=300, n_train=50, n_dev=20, n_dl=5))


def test_shapes_ids_and_judgements():
    source = synthetic_source()
    passages = dict(source.collection())
    assert len(passages) == 3000 and all(40 <= len(text.split()) <= 90 for text in passages.values())
    qids = [qid for split in source.splits.values() for qid in split.queries]
    assert len(qids) == len(set(qids)) == 2000 + 200 + 30
    for name, split in source.splits.items():
        assert len(set(split.queries.values())) == len(split.queries)
        for judged in split.qrels.values():
            assert set(judged) <= set(passages) and max(judged.values()) >= 1
            if name != "dl":
                assert list(judged.values()) == [1]
    grades = Counter(rel for judged in source.splits["dl"].qrels.values() for rel in judged.values())
    assert grades[3] == 30 and grades[2] > 0 and grades[1] > 0 and grades[0] > 0


def test_paraphrases_share_no_content_word_and_lexical_queries_share_rare_tokens():
    source = synthetic_source()
    passages = dict(source.collection())
    split = source.splits["train"]
    lexical, paraphrase = [], []
    for k, (qid, text) in enumerate(split.queries.items()):
        (target,) = split.qrels[qid]
        (lexical if k % 2 == 0 else paraphrase).append((text, target))
    assert all(not content_words(q) & content_words(passages[t]) for q, t in paraphrase)
    assert all(content_words(q) & content_words(passages[t]) for q, t in lexical)  # code or name, at least

    def overlap_ranks_first(query, target):
        scores = {pid: len(content_words(query) & content_words(text)) for pid, text in passages.items()}
        return scores[target] == max(scores.values())

    lexical_wins = sum(overlap_ranks_first(q, t) for q, t in lexical[:100]) / 100
    paraphrase_wins = sum(overlap_ranks_first(q, t) for q, t in paraphrase[:100]) / 100
    assert lexical_wins > 0.9 and paraphrase_wins < 0.1
