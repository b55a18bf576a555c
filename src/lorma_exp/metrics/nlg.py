"""Data-to-text generation metrics, computed as the official scorers behind the paper's Tables 3 and 13.

E2E (`e2e_scores`) follows the E2E NLG Challenge scorer (tuetschek/e2e-metrics, `measure_scores.py`):
BLEU and NIST as its MT-Eval script `mteval-v13a-sig.pl` computes them (the scorer's default, edited by
the challenge for a variable number of references), and METEOR 1.5, ROUGE-L and CIDEr from the COCO
caption evaluation code after Stanford PTB tokenisation; those COCO pieces are pycocoevalcap's, reused.

WebNLG and DART (`webnlg_scores`) follow the pipeline of microsoft/LoRA that the paper reuses: texts
written by `gpt2_decode.py --lower --tokenize --ref_num 6`, scored by the WebNLG GenerationEval `eval.py
-nr 6 -m bleu,meteor,ter`: BLEU as Moses' `multi-bleu-detok.perl` prints it (0-100), METEOR 1.5 on
NLTK-tokenised text, and TER as pyter3 computes it (best reference per instance, mean over instances).

METEOR and the PTB tokeniser run on Java. Score files in the E2E challenge's format with
`python -m lorma_exp.metrics.nlg REFS HYPS [--suite e2e|webnlg] [--json OUT]`.
"""

import argparse
import functools
import json
import math
import re
import shutil
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
from nltk.tokenize import word_tokenize
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

from lorma_exp.metrics.suites import E2E, WEBNLG

WEBNLG_REFERENCES = 6
"""References kept per instance for WebNLG and DART, as the LoRA pipeline writes them (`--ref_num 6`)."""


def e2e_scores(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """BLEU, NIST, METEOR, ROUGE_L and CIDEr of a corpus, as the E2E NLG Challenge scorer prints them.

    `references[i]` holds every reference of `hypotheses[i]`. BLEU, METEOR and ROUGE_L lie in [0, 1];
    NIST (information summed over n-gram orders) and CIDEr (10 times a mean cosine) do not: about 8.7
    and 2.5 for the paper's GPT-2 medium runs.
    """
    _check_corpus(hypotheses, references)
    _require_java()
    bleu, nist = _mteval_bleu_nist(hypotheses, references)
    coco_references, coco_hypotheses = _ptb_tokenize(hypotheses, references)
    meteor, _ = _meteor().compute_score(coco_references, coco_hypotheses)
    rouge_l, _ = Rouge().compute_score(coco_references, coco_hypotheses)
    cider, _ = Cider().compute_score(coco_references, coco_hypotheses)
    return dict(zip(E2E.metrics, (bleu, nist, meteor, float(rouge_l), float(cider)), strict=True))


def webnlg_scores(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """BLEU (0-100), METEOR and TER of a corpus, as WebNLG GenerationEval scores the LoRA pipeline's files.

    Texts are lower-cased and split at every non-word character first, and an instance keeps its first
    `WEBNLG_REFERENCES` references. (The pipeline pads shorter lists with the first reference, which
    changes none of the three scores.)
    """
    _check_corpus(hypotheses, references)
    _require_java()
    split_hypotheses = [_lower_and_split(text) for text in hypotheses]
    split_references = [[_lower_and_split(text) for text in refs[:WEBNLG_REFERENCES]] for refs in references]
    word_hypotheses = [_nltk_words(text) for text in split_hypotheses]
    word_references = [[_nltk_words(text) for text in refs] for refs in split_references]
    meteor, _ = _meteor().compute_score(
        dict(enumerate(word_references)), {i: [text] for i, text in enumerate(word_hypotheses)}
    )
    ter = [
        min(_ter(hypothesis.split(), reference.split()) for reference in refs)
        for hypothesis, refs in zip(word_hypotheses, word_references, strict=True)
    ]
    bleu = _multi_bleu_detok(split_hypotheses, split_references)
    return dict(zip(WEBNLG.metrics, (bleu, meteor, sum(ter) / len(ter)), strict=True))


SCORERS: dict[str, Callable[[Sequence[str], Sequence[Sequence[str]]], dict[str, float]]] = {
    E2E.name: e2e_scores,
    WEBNLG.name: webnlg_scores,
}
"""The scorer of each NLG metric suite (:mod:`lorma_exp.metrics.suites`), by the suite's name."""


def score_generations(
    suite: str, hypotheses: Sequence[str], references: Sequence[Sequence[str]], metric_names: Sequence[str]
) -> dict[str, float]:
    """``metric_names`` of ``suite`` for decoded hypotheses, each scored as one line.

    A hypothesis' line breaks become spaces, as in the ``.hyp.txt`` file the challenges' scorers read.
    """
    one_line = [" ".join(hypothesis.split()) for hypothesis in hypotheses]
    scores = SCORERS[suite](one_line, references)
    return {name: float(scores[name]) for name in metric_names}


def main(argv: Sequence[str] | None = None) -> None:
    """Scores a hypothesis file against a reference file and prints the table (and writes JSON)."""
    parser = argparse.ArgumentParser(
        prog="python -m lorma_exp.metrics.nlg",
        description="Score generated texts with the E2E NLG Challenge or WebNLG GenerationEval metrics.",
    )
    parser.add_argument(
        "references",
        type=Path,
        help="references, one per line, the instances separated by a blank line (a file without blank "
        "lines holds one reference per instance)",
    )
    parser.add_argument("hypotheses", type=Path, help="generated texts, one per line")
    parser.add_argument("--suite", choices=sorted(SCORERS), default="e2e", help="which scorer (default: e2e)")
    parser.add_argument("--json", type=Path, dest="json_path", help="also write the scores to this JSON file")
    args = parser.parse_args(argv)

    hypotheses = [line.strip() for line in args.hypotheses.read_text(encoding="utf-8").splitlines()]
    try:
        references = _read_references(args.references)
        if len(hypotheses) != len(references):
            raise ValueError(
                f"{args.hypotheses} has {len(hypotheses)} lines but {args.references} has {len(references)} "
                "groups of references: give one group (blank-line separated) per hypothesis line"
            )
        scores = SCORERS[args.suite](hypotheses, references)
    except ValueError as error:
        parser.error(str(error))
    print(f"{args.suite} scores of {len(hypotheses)} instances")
    for name, value in scores.items():
        print(f"  {name:<8} {value:.4f}")
    if args.json_path is not None:
        args.json_path.write_text(json.dumps(scores, indent=2) + "\n", encoding="utf-8")


def _read_references(path: Path) -> list[list[str]]:
    """Reference groups read as `measure_scores.py` reads them: blank lines separate instances, and a file
    with no blank line holds one reference per instance."""
    groups: list[list[str]] = [[]]
    for number, line in enumerate(path.read_text(encoding="utf-8").rstrip().splitlines(), start=1):
        if line.strip():
            groups[-1].append(line.strip())
        elif groups[-1]:
            groups.append([])
        else:
            raise ValueError(
                f"{path}:{number}: a blank line that ends no group of references: separate instances "
                "with exactly one blank line"
            )
    if len(groups) == 1:
        return [[reference] for reference in groups[0]]
    return groups


def _check_corpus(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> None:
    """Rejects what the official scorers cannot be given through their files: a line break inside a text
    (it would shift the Java tokeniser's line alignment), an instance with no references, an empty one."""
    if len(hypotheses) != len(references):
        raise ValueError(
            f"hypotheses has {len(hypotheses)} items but references has {len(references)}: give one list "
            "of references per hypothesis"
        )
    if not hypotheses:
        raise ValueError("hypotheses is empty: give at least one instance to score")
    for i, hypothesis in enumerate(hypotheses):
        if not isinstance(hypothesis, str) or hypothesis.splitlines() not in ([], [hypothesis]):
            raise ValueError(f"hypotheses[{i}] must be a string on one line, got {hypothesis!r}")
    for i, refs in enumerate(references):
        if isinstance(refs, str) or not refs:
            raise ValueError(f"references[{i}] must be a non-empty list of strings, got {refs!r}")
        for j, reference in enumerate(refs):
            if not isinstance(reference, str) or not reference.strip():
                raise ValueError(f"references[{i}][{j}] must be a non-empty string, got {reference!r}")
            if reference.splitlines() != [reference]:
                raise ValueError(f"references[{i}][{j}] must be on one line, got {reference!r}")


def _require_java() -> None:
    """Fails before any work with the fix, where pycocoevalcap would die inside a subprocess call."""
    if shutil.which("java") is None:
        raise RuntimeError(
            "METEOR 1.5 and the PTB tokenizer of pycocoevalcap run on Java and no `java` is on PATH: "
            "install a Java runtime (8 or newer), e.g. `apt-get install default-jre-headless`"
        )


@functools.cache
def _meteor() -> Meteor:
    """The one METEOR 1.5 process of this interpreter (`-l en -norm`, as both scorers run it): starting
    Java and loading the paraphrase table takes seconds, scoring takes milliseconds."""
    return Meteor()


def _ptb_tokenize(
    hypotheses: Sequence[str], references: Sequence[Sequence[str]]
) -> tuple[dict[int, list[str]], dict[int, list[str]]]:
    """Texts as the COCO code gives them to METEOR, ROUGE-L and CIDEr: Stanford PTB tokens, lower-cased,
    punctuation dropped."""
    tokenizer = PTBTokenizer()
    tokenized_references = tokenizer.tokenize(
        {i: [{"caption": reference} for reference in refs] for i, refs in enumerate(references)}
    )
    tokenized_hypotheses = tokenizer.tokenize({i: [{"caption": text}] for i, text in enumerate(hypotheses)})
    return tokenized_references, tokenized_hypotheses


_MTEVAL_ENTITIES = (("&quot;", '"'), ("&amp;", "&"), ("&lt;", "<"), ("&gt;", ">"))
_MTEVAL_SYMBOL = re.compile(r"([{-~\[-` -&(-+:-@/])")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_NIST_BETA = -math.log(0.5) / math.log(1.5) ** 2


def _mteval_words(text: str, lowercase: bool) -> list[str]:
    """Words as mteval-v13a's default tokenisation makes them, which multi-bleu-detok.perl shares.

    Lower-casing is ASCII-only (the Perl's `tr/[A-Z]/[a-z]/`): "É" and "é" stay different letters.
    """
    text = text.replace("<skipped>", "")
    for entity, character in _MTEVAL_ENTITIES:
        text = text.replace(entity, character)
    if lowercase:
        text = text.translate(_ASCII_LOWER)
    text = _MTEVAL_SYMBOL.sub(r" \1 ", f" {text} ")
    text = re.sub(r"([^0-9])([.,])", r"\1 \2 ", text)
    text = re.sub(r"([.,])([^0-9])", r" \1 \2", text)
    text = re.sub(r"([0-9])(-)", r"\1 \2 ", text)
    return text.split()


def _ngrams(words: Sequence[str], max_order: int) -> Counter[tuple[str, ...]]:
    """Counts of every n-gram of `words` up to `max_order` words."""
    return Counter(
        tuple(words[start : start + order])
        for order in range(1, max_order + 1)
        for start in range(len(words) - order + 1)
    )


def _clipped_matches(
    hypothesis: Sequence[str], references: Sequence[Sequence[str]], max_order: int
) -> Iterator[tuple[tuple[str, ...], int]]:
    """Hypothesis n-grams with their count clipped to the most any one reference has (the BLEU rule)."""
    most_in_a_reference: Counter[tuple[str, ...]] = Counter()
    for reference in references:
        most_in_a_reference |= _ngrams(reference, max_order)
    for ngram, count in _ngrams(hypothesis, max_order).items():
        clipped = min(count, most_in_a_reference[ngram])
        if clipped:
            yield ngram, clipped


def _mteval_bleu_nist(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> tuple[float, float]:
    """Corpus BLEU-4 and NIST-5 as `mteval-v13a-sig.pl` scores the E2E scorer's files (case-insensitive).

    The script's particular choices: an n-gram order without a match counts 1 / (2^k * count) in BLEU
    (k numbering such orders, its default smoothing); the BLEU reference length of an instance is its
    first reference's or a closer non-empty one's (ties: the shorter); NIST weights come from the
    references of the whole corpus, and NIST's length penalty compares with the reference length per
    instance averaged over the instances' non-empty references.
    """
    hypothesis_words = [_mteval_words(text, lowercase=True) for text in hypotheses]
    reference_words = [[_mteval_words(text, lowercase=True) for text in refs] for refs in references]
    information = _nist_information([words for refs in reference_words for words in refs])
    matches, match_information, hypothesis_ngrams = [0] * 5, [0.0] * 5, [0] * 5
    bleu_reference_length = nist_reference_words = non_empty_references = 0
    for hypothesis, refs in zip(hypothesis_words, reference_words, strict=True):
        for ngram, clipped in _clipped_matches(hypothesis, refs, max_order=5):
            matches[len(ngram) - 1] += clipped
            match_information[len(ngram) - 1] += clipped * information[ngram]
        for order in range(5):
            hypothesis_ngrams[order] += max(len(hypothesis) - order, 0)
        lengths = [len(refs[0])] + [len(words) for words in refs[1:] if words]
        bleu_reference_length += min(lengths, key=lambda length: (abs(length - len(hypothesis)), length))
        nist_reference_words += sum(len(words) for words in refs)
        non_empty_references += sum(1 for words in refs if words)

    bleu = _smoothed_bleu(matches[:4], hypothesis_ngrams[:4], bleu_reference_length)
    nist_reference_length = nist_reference_words * len(hypotheses) / non_empty_references
    nist_sum = sum(
        info / max(count, 1) for info, count in zip(match_information, hypothesis_ngrams, strict=True)
    )
    return bleu, nist_sum * _nist_length_penalty(hypothesis_ngrams[0] / nist_reference_length)


def _nist_information(references: Sequence[Sequence[str]]) -> dict[tuple[str, ...], float]:
    """NIST information of each reference n-gram: log2(count of its first n-1 words / count of it).

    As in the Perl, a bigram starting with the word "0" divides the corpus word count instead (its
    prefix "0" is false to Perl, which takes the unigram branch).
    """
    counts: Counter[tuple[str, ...]] = Counter()
    for words in references:
        counts.update(_ngrams(words, 5))
    corpus_words = sum(len(words) for words in references)
    return {
        ngram: math.log2((counts[ngram[:-1]] if ngram[:-1] not in ((), ("0",)) else corpus_words) / count)
        for ngram, count in counts.items()
    }


def _smoothed_bleu(matches: Sequence[int], totals: Sequence[int], reference_length: int) -> float:
    """BLEU with mteval-v13a's default smoothing; an order with no hypothesis n-gram counts as 1."""
    if totals[0] == 0:
        return 0.0
    log_precision, halvings = 0.0, 1
    for matched, total in zip(matches, totals, strict=True):
        if total == 0:
            continue
        if matched == 0:
            halvings *= 2
            log_precision += math.log(1 / (halvings * total))
        else:
            log_precision += math.log(matched / total)
    brevity = math.exp(min(0.0, 1 - reference_length / totals[0]))
    return brevity * math.exp(log_precision / len(totals))


def _nist_length_penalty(ratio: float) -> float:
    """NIST's brevity factor: exp(-beta log^2 ratio) below ratio 1, with beta giving 0.5 at ratio 2/3."""
    if ratio >= 1:
        return 1.0
    if ratio <= 0:
        return 0.0
    return math.exp(-_NIST_BETA * math.log(ratio) ** 2)


def _multi_bleu_detok(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Corpus BLEU-4 on 0-100 as Moses' multi-bleu-detok.perl computes it: case-sensitive, unsmoothed (an
    order without a match gives 0), the closest reference length per instance (ties: the shorter)."""
    matches, totals = [0] * 4, [0] * 4
    hypothesis_length = reference_length = 0
    for text, refs in zip(hypotheses, references, strict=True):
        hypothesis = _mteval_words(text, lowercase=False)
        reference_words = [_mteval_words(reference, lowercase=False) for reference in refs]
        for ngram, clipped in _clipped_matches(hypothesis, reference_words, max_order=4):
            matches[len(ngram) - 1] += clipped
        for order in range(4):
            totals[order] += max(len(hypothesis) - order, 0)
        hypothesis_length += len(hypothesis)
        lengths = [len(words) for words in reference_words]
        reference_length += min(lengths, key=lambda length: (abs(length - len(hypothesis)), length))
    if 0 in matches:
        return 0.0
    brevity = (
        math.exp(1 - reference_length / hypothesis_length) if hypothesis_length < reference_length else 1
    )
    return 100 * brevity * math.exp(sum(math.log(m / t) for m, t in zip(matches, totals, strict=True)) / 4)


def _lower_and_split(text: str) -> str:
    """The text as LoRA's `gpt2_decode.py --lower --tokenize` writes it: lower-cased, each non-word
    character a word of its own."""
    return " ".join(re.sub(r"(\W)", r" \1 ", text.lower()).split())


def _nltk_words(text: str) -> str:
    """NLTK's word tokens, as GenerationEval feeds METEOR and TER. It splits sentences with Punkt first,
    a model that needs a download; on text split at every non-word character already, sentence
    boundaries change no token, so the line is tokenised whole."""
    return " ".join(word_tokenize(text, preserve_line=True))


def _ter(hypothesis: list[str], reference: list[str]) -> float:
    """Translation edit rate (Snover et al., 2006) as pyter3 searches it: while some shift lowers the
    edit distance, apply the best one (ties: the greatest resulting word list); then (shifts + word
    Levenshtein distance) / reference length."""
    word_ids = {word: i for i, word in enumerate(dict.fromkeys(hypothesis + reference))}
    reference_ids = np.array([word_ids[word] for word in reference])
    current = hypothesis
    distance = int(_levenshtein_rows([current], word_ids, reference_ids)[0])
    shifts = 0
    while candidates := _shift_candidates(current, reference):
        distances = _levenshtein_rows(candidates, word_ids, reference_ids)
        best = int(distances.min())
        if best >= distance:
            break
        current = max(words for words, d in zip(candidates, distances, strict=True) if d == best)
        distance, shifts = best, shifts + 1
    return (shifts + distance) / len(reference)


def _shift_candidates(words: list[str], reference: list[str]) -> list[list[str]]:
    """Every shift pyter3 tries: a maximal run words[i:i+k] == reference[j:j+k] with i != j, moved so
    that it starts at position j of the words left once it is taken out."""
    candidates = []
    for i, word in enumerate(words):
        for j, reference_word in enumerate(reference):
            if i == j or word != reference_word:
                continue
            length = 1
            while (
                i + length < len(words)
                and j + length < len(reference)
                and words[i + length] == reference[j + length]
            ):
                length += 1
            rest = words[:i] + words[i + length :]
            candidates.append(rest[:j] + words[i : i + length] + rest[j:])
    return candidates


def _levenshtein_rows(
    sequences: Sequence[Sequence[str]], word_ids: dict[str, int], reference_ids: np.ndarray
) -> np.ndarray:
    """Word-level Levenshtein distance of equally long sequences to the reference, filling the dynamic
    programme one hypothesis position at a time for all sequences at once (pure-Python TER is slow)."""
    ids = np.array([[word_ids[word] for word in words] for words in sequences], dtype=np.int64)
    ids = ids.reshape(len(sequences), -1)
    columns = np.arange(len(reference_ids) + 1)
    previous = np.broadcast_to(columns, (len(sequences), len(columns)))
    for position in range(ids.shape[1]):
        best = np.empty_like(previous)
        best[:, 0] = position + 1
        substitution = previous[:, :-1] + (ids[:, position, None] != reference_ids[None, :])
        best[:, 1:] = np.minimum(previous[:, 1:] + 1, substitution)
        previous = np.minimum.accumulate(best - columns, axis=1) + columns
    return previous[:, -1]


if __name__ == "__main__":
    main()
