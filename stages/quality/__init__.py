"""Quality: heuristic rules, the classifier's score and KenLM perplexity (run by `jobs/quality.py` and
`jobs/perplexity.py`).

    filter.py      the quality job's stage: the rules in order (`RULES`, the one list of rule names),
                   signal columns, then the classifier (`QualityFilter`, `QualityRules`)
    gopher.py      Gopher quality and repetition rules (Rae et al. 2021)
    c4.py          C4's line and page rules (Raffel et al. 2020)
    fineweb.py     FineWeb's rules (Penedo et al. 2024)
    words.py       the word split the rules share (`word_tokens`, `TextView`) and `Rule`, their base class
    ngrams.py      repetition counting (repeated lines, n-gram hashes)
    classifier.py  the fastText quality classifier (and language-ID training): data, training, scoring
    perplexity.py  KenLM perplexity and its head / middle / tail buckets (cc_net)
"""
