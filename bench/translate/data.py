"""Parallel text for ``seqbench translate``: a synthetic language pair made from a seed, or a user's corpus.

**The synthetic pair.**  A source language with English's order and a target language that differs from
it in three ways a translator must learn, one of them long-range:

- every word maps through a fixed dictionary (pseudo-words built from syllables);
- noun phrases reorder: ``the big red dog`` → ``DET dog' red' big'``, adjectives after the noun, innermost
  first, and the determiner agrees with the noun's (hidden) gender and number;
- in a subordinate clause (after ``that``) the verb goes last, after its object, and every verb agrees in
  gender and number with its subject's head noun, which may lie many words back, behind adjectives and a
  prepositional phrase whose own noun is a distractor.

Sentences have exactly the length asked for, 1 to ``max_len`` words: a noun phrase alone up to 3 words,
else clauses joined by ``that`` (at least 4 words each), grown by adjectives, objects and prepositional
phrases until the length is met.  So every pair has one exact reference, and the target at a verb
needs information from far back in the source, as the chapter's bottleneck argument assumes.

**A corpus.**  ``load_corpus(src, tgt)`` reads one sentence per line; ``SentencePieceVocab`` trains a
sentencepiece model on the training split.
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIALS = ("<pad>", "<s>", "</s>", "<unk>")

# The chapter's source-length buckets (5-10, 15-20, 25-30, 40+) and the buckets between, as (lo, hi) words.
BUCKETS = ((1, 4), (5, 10), (11, 14), (15, 20), (21, 24), (25, 30), (31, 39), (40, 10 ** 9))


def bucket_name(lo: int, hi: int) -> str:
    return f"{lo}+" if hi >= 10 ** 9 else f"{lo}-{hi}"


def bleu_column(bucket: str) -> str:
    """translate.csv's column for a bucket's BLEU: bleu_5_10, bleu_40_plus."""
    return "bleu_" + bucket.replace("-", "_").replace("+", "_plus")


def bucket_of(n: int) -> str:
    for lo, hi in BUCKETS:
        if lo <= n <= hi:
            return bucket_name(lo, hi)
    raise ValueError(f"a sentence of {n} words has no bucket")


class DataError(ValueError):
    """Unusable parallel text: the CLI prints it as one line."""


# --------------------------------------------------------------------------------------------- synthetic

@dataclass(frozen=True)
class Lexicon:
    """The two languages' words: source and target forms, and each noun's target gender."""
    nouns: list           # source singular forms; plural = + "s"
    adjs: list
    verbs: list
    preps: list
    t_nouns: list         # target singular forms; plural = + "i"
    t_adjs: list
    t_verbs: list         # target stems: + the agreement suffix
    t_preps: list
    gender: list          # 0 or 1 per noun


_SYL = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
_DET = {"the": ("le", "la", "les", "las"), "a": ("un", "una", "uns", "unas")}   # [gender + 2·plural]
_VERB_END = ("o", "a", "on", "an")                                              # [gender + 2·plural]


def _words(rng: random.Random, n: int, syllables: int, taken: set) -> list:
    if n > len(_SYL) ** syllables // 2:
        raise DataError(f"a lexicon of {n} {syllables}-syllable words is past what the syllables make; a smaller --vocab")
    out = []
    while len(out) < n:
        w = "".join(rng.choice(_SYL) for _ in range(syllables))
        if w not in taken:
            taken.add(w)
            out.append(w)
    return out


def lexicon(seed: int, vocab: int) -> Lexicon:
    """A dictionary of about ``vocab`` source words (nouns in two forms count twice), made from ``seed``."""
    if vocab < 40:
        raise DataError(f"--vocab must be at least 40 words, got {vocab}")
    rng = random.Random(f"lexicon-{seed}")
    n_noun, n_adj, n_prep = vocab * 3 // 10, vocab // 5, min(12, vocab // 20)
    n_verb = vocab - 2 * n_noun - n_adj - n_prep - len(_DET) - 1
    src, tgt = set(_DET) | {"that"}, set()
    return Lexicon(nouns=_words(rng, n_noun, 2, src), adjs=_words(rng, n_adj, 3, src),
                   verbs=_words(rng, n_verb, 2, src), preps=_words(rng, n_prep, 1, src),
                   t_nouns=_words(rng, n_noun, 3, tgt), t_adjs=_words(rng, n_adj, 2, tgt),
                   t_verbs=_words(rng, n_verb, 3, tgt), t_preps=_words(rng, n_prep, 2, tgt),
                   gender=[rng.randrange(2) for _ in range(n_noun)])


def _np(rng: random.Random) -> dict:
    return {"det": rng.choice(("the", "a")), "noun": None, "plural": rng.random() < 0.4, "adjs": [], "pp": None}


def _clause() -> dict:
    return {"subj": None, "verb": None, "obj": None}


def sentence_tree(rng: random.Random, lex: Lexicon, length: int) -> dict:
    """A tree whose source rendering has exactly ``length`` words."""
    if length <= 3:                                   # a noun phrase alone: N, DET N, DET ADJ N
        tree = {"np": _np(rng)}
        nps = [tree["np"]]
        if length == 1:
            tree["np"]["det"] = None
        if length == 3:
            tree["np"]["adjs"].append(None)
        _fill(rng, lex, nps, [])
        return tree
    most = max(1, (length + 1) // 5)                  # clauses of 5+ words on average, 4 at least
    n_clauses = rng.randint(1, max(1, min(most, 1 + length // 10)))
    clauses = [_clause() for _ in range(n_clauses)]
    nps = []
    for c in clauses:
        c["subj"] = _np(rng)
        nps.append(c["subj"])
    size = 3 * n_clauses + (n_clauses - 1)            # DET N V per clause, "that" between
    intransitive = list(clauses)
    while size < length:
        room = length - size
        choices = ["adj"] * 3
        if room >= 2 and intransitive:
            choices += ["obj"] * 4
        if room >= 3:
            choices += ["pp"] * 2
        pick = rng.choice(choices)
        if pick == "obj":
            c = intransitive.pop(rng.randrange(len(intransitive)))
            c["obj"] = _np(rng)
            nps.append(c["obj"])
            size += 2
        elif pick == "pp":
            host = rng.choice(nps)
            while host["pp"] is not None:             # attach at the innermost phrase
                host = host["pp"]["np"]
            host["pp"] = {"prep": None, "np": _np(rng)}
            nps.append(host["pp"]["np"])
            size += 3
        else:
            rng.choice(nps)["adjs"].append(None)
            size += 1
    _fill(rng, lex, nps, clauses)
    return {"clauses": clauses}


def _fill(rng, lex, nps, clauses) -> None:
    for p in nps:
        p["noun"] = rng.randrange(len(lex.nouns))
        p["adjs"] = [rng.randrange(len(lex.adjs)) for _ in p["adjs"]]
        if p["pp"] is not None:
            p["pp"]["prep"] = rng.randrange(len(lex.preps))
    for c in clauses:
        c["verb"] = rng.randrange(len(lex.verbs))


def _src_np(lex, p) -> list:
    words = ([p["det"]] if p["det"] else []) + [lex.adjs[a] for a in p["adjs"]]
    words.append(lex.nouns[p["noun"]] + ("s" if p["plural"] else ""))
    if p["pp"]:
        words += [lex.preps[p["pp"]["prep"]]] + _src_np(lex, p["pp"]["np"])
    return words


def _agree(lex, p) -> int:
    return lex.gender[p["noun"]] + 2 * p["plural"]


def _tgt_np(lex, p) -> list:
    words = [_DET[p["det"]][_agree(lex, p)]] if p["det"] else []
    words.append(lex.t_nouns[p["noun"]] + ("i" if p["plural"] else ""))
    words += [lex.t_adjs[a] for a in reversed(p["adjs"])]
    if p["pp"]:
        words += [lex.t_preps[p["pp"]["prep"]]] + _tgt_np(lex, p["pp"]["np"])
    return words


def render(lex: Lexicon, tree: dict) -> tuple[str, str]:
    """(source, target) sentences of a tree, words separated by spaces."""
    if "np" in tree:
        return " ".join(_src_np(lex, tree["np"])), " ".join(_tgt_np(lex, tree["np"]))
    src, tgt = [], []
    for i, c in enumerate(tree["clauses"]):
        verb = lex.t_verbs[c["verb"]] + _VERB_END[_agree(lex, c["subj"])]
        obj_s = _src_np(lex, c["obj"]) if c["obj"] else []
        obj_t = _tgt_np(lex, c["obj"]) if c["obj"] else []
        if i:
            src.append("that")
            tgt.append("ke")
        src += _src_np(lex, c["subj"]) + [lex.verbs[c["verb"]]] + obj_s
        # the main clause keeps SVO; a subordinate clause puts its verb last
        tgt += _tgt_np(lex, c["subj"]) + ([verb] + obj_t if i == 0 else obj_t + [verb])
    return " ".join(src), " ".join(tgt)


def synthetic_pairs(seed: int, n: int, max_len: int, vocab: int, split: str) -> list[tuple[str, str]]:
    """``n`` (source, target) pairs of ``split`` ("train" or "test": disjoint random streams of one
    lexicon), source lengths uniform over 1..max_len."""
    if max_len < 1:
        raise DataError(f"--max-len must be at least 1, got {max_len}")
    lex = lexicon(seed, vocab)
    rng = random.Random(f"{split}-{seed}")
    out = []
    for _ in range(n):
        out.append(render(lex, sentence_tree(rng, lex, rng.randint(1, max_len))))
    return out


def test_pairs(seed: int, per_bucket: int, max_len: int, vocab: int) -> list[tuple[str, str]]:
    """The fixed held-out set: ``per_bucket`` pairs in every length bucket up to ``max_len`` (lengths
    uniform within each bucket), so the long buckets are measured as well as the short ones."""
    lex = lexicon(seed, vocab)
    rng = random.Random(f"test-{seed}")
    out = []
    for lo, hi in BUCKETS:
        if lo > max_len:
            break
        for _ in range(per_bucket):
            out.append(render(lex, sentence_tree(rng, lex, rng.randint(lo, min(hi, max_len)))))
    return out


# --------------------------------------------------------------------------------------------- a corpus

def load_corpus(src_path: str, tgt_path: str, max_pairs: int | None = None) -> list[tuple[str, str]]:
    """Sentence pairs from two files, one sentence per line; DataError for a missing or empty file or
    mismatched line counts."""
    sides = []
    for name, path in (("source", src_path), ("target", tgt_path)):
        try:
            with open(path, encoding="utf-8") as f:
                lines = [line.rstrip("\n") for line in f]
        except OSError as exc:
            raise DataError(f"--corpus: cannot read the {name} file {path}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise DataError(f"--corpus: the {name} file {path} is not UTF-8 text") from None
        if not any(line.strip() for line in lines):
            raise DataError(f"--corpus: the {name} file {path} is empty")
        sides.append(lines)
    if len(sides[0]) != len(sides[1]):
        raise DataError(f"--corpus: {src_path} has {len(sides[0])} lines but {tgt_path} has {len(sides[1])}; "
                        f"a parallel corpus has one target line per source line")
    pairs = [(s.strip(), t.strip()) for s, t in zip(*sides) if s.strip() and t.strip()]
    if len(pairs) < 20:
        raise DataError(f"--corpus: {len(pairs)} non-empty pairs; at least 20 are needed (a held-out tenth)")
    return pairs[:max_pairs] if max_pairs else pairs


def split_corpus(pairs: list, test_n: int) -> tuple[list, list]:
    """(train, test): every k-th pair held out, ``test_n`` of them at most (a tenth at most)."""
    k = max(10, len(pairs) // max(1, test_n))
    test = [p for i, p in enumerate(pairs) if i % k == k - 1]
    train = [p for i, p in enumerate(pairs) if i % k != k - 1]
    return train, test


def digest(pairs: list) -> str:
    h = hashlib.sha1()
    for s, t in pairs:
        h.update(s.encode() + b"\t" + t.encode() + b"\n")
    return h.hexdigest()[:12]


# --------------------------------------------------------------------------------------------- vocabularies

class WordVocab:
    """Whitespace words of a closed vocabulary (the synthetic pair): the specials, then every word seen."""

    def __init__(self, sentences):
        words = sorted({w for s in sentences for w in s.split()})
        self.itos = list(SPECIALS) + words
        self.stoi = {w: i for i, w in enumerate(self.itos)}

    def __len__(self):
        return len(self.itos)

    def encode(self, s: str) -> list[int]:
        return [self.stoi.get(w, UNK) for w in s.split()]

    def decode(self, ids) -> str:
        return " ".join(self.itos[i] for i in ids if i >= len(SPECIALS))

    def pieces(self, ids) -> list[str]:
        return [self.itos[i] for i in ids]


class SentencePieceVocab:
    """A sentencepiece unigram model trained on the training split's sentences of one side."""

    def __init__(self, sentences, size: int):
        """Train on ``sentences`` (in memory: ``save`` writes the model).  DataError when sentencepiece
        cannot make that many pieces of them."""
        try:
            import sentencepiece as spm
        except ImportError:
            raise DataError("--corpus needs sentencepiece: pip install sentencepiece") from None
        import io
        units = {w for s in sentences for w in s.split()} | {c for s in sentences for c in s}
        size = max(len(SPECIALS) + 20, min(size, len(units) + len(SPECIALS)))
        model = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(sentence_iterator=iter(sentences), model_writer=model, vocab_size=size,
                                           pad_id=PAD, bos_id=BOS, eos_id=EOS, unk_id=UNK, hard_vocab_limit=False,
                                           minloglevel=2, num_threads=1)      # one thread: the same model every time
        except RuntimeError as exc:
            raise DataError(f"--corpus: sentencepiece could not train {size} pieces: {exc}") from None
        self.proto = model.getvalue()
        self.sp = spm.SentencePieceProcessor(model_proto=self.proto)

    def save(self, path: str) -> None:
        with open(path, "wb") as f:
            f.write(self.proto)

    def pieces(self, ids) -> list[str]:
        return [self.sp.id_to_piece(i) for i in ids]

    def __len__(self):
        return self.sp.get_piece_size()

    def encode(self, s: str) -> list[int]:
        return self.sp.encode(s)

    def decode(self, ids) -> str:
        return self.sp.decode([i for i in ids if i >= len(SPECIALS)])
