"""What the language-model scripts evaluate alike: the corpus of a run (its windows and judge),
greedy or sampled generation, the character n-gram judge of gen_ppl (interpolated Witten–Bell), the
held-out continuation protocol, reference bits per character, samples.
"""

import dataclasses
import math
import os

import numpy as np
import torch

import common
from data import decode, load_windows


def top_p_filter(probs, top_p):
    """Nucleus sampling's distribution (Holtzman et al. 2020): of probs (N, V), keep the smallest
    set of most likely characters whose probability reaches top_p, renormalised."""
    sorted_p, order = probs.sort(-1, descending=True)
    # a character stays if the ones more likely than it do not reach top_p yet
    keep = (sorted_p.cumsum(-1) - sorted_p) < top_p
    kept = torch.zeros_like(probs).scatter(-1, order, sorted_p * keep)
    return kept / kept.sum(-1, keepdim=True)


@torch.no_grad()
def generate(next_logits, prompts, new_tokens, temperature, generator, top_p=1.0):
    """Append new_tokens characters to prompts (N, P), each from next_logits(x) (N, V): greedy, or
    sampled at T (from the top_p nucleus)."""
    x = prompts
    for _ in range(new_tokens):
        logits = next_logits(x).float()  # (N, V)
        if temperature == 0:
            nxt = logits.argmax(-1)
        else:
            probs = (logits / temperature).softmax(-1)
            if top_p < 1:
                probs = top_p_filter(probs, top_p)
            nxt = torch.multinomial(probs, 1, generator=generator)[:, 0]
        x = torch.cat([x, nxt[:, None]], 1)
    return x[:, prompts.shape[1] :]  # (N, new_tokens)


# ----------------------------------------------------------------------------------------------
# The judge of gen_ppl: an interpolated Witten–Bell character n-gram of the training split
# ----------------------------------------------------------------------------------------------


def _lookup(keys, values, query):
    """values[i] where keys[i] == query (keys sorted), else 0."""
    idx = np.searchsorted(keys, query).clip(max=len(keys) - 1)
    return np.where(keys[idx] == query, values[idx], 0)


class CharNgram:
    """P(c | h) = (N(h c) + T(h)·P(c | h′)) / (N(h) + T(h)), h′ = h without its first character,
    T(h) the number of distinct characters seen after h, down to 1/V (Witten & Bell 1991; Chen &
    Goodman 1998 §2.4)."""

    def __init__(self, ids, vocab, order):
        self.vocab = vocab
        # V^order must fit in int64
        self.order = max(1, min(order, int(62 / math.log2(max(vocab, 2)))))
        ids = ids.numpy()[None]
        self.tables = []
        for k in range(1, self.order + 1):
            grams, counts = np.unique(self._keys(ids, k), return_counts=True)
            contexts, inverse = np.unique(grams // vocab, return_inverse=True)
            self.tables.append(
                (
                    grams,
                    counts,
                    contexts,
                    np.bincount(inverse, weights=counts),
                    np.bincount(inverse),
                )
            )

    def _keys(self, seqs, k):
        """(N, T) ids → (N, T−k+1) integer keys of the k-grams ending at positions k−1..T−1."""
        T = seqs.shape[1]
        key = np.zeros((len(seqs), T - k + 1), dtype=np.int64)
        for j in range(k):
            key = key * self.vocab + seqs[:, j : T - k + 1 + j]
        return key

    def log_probs(self, seqs):
        """(N, T) ids → (N, T) natural-log probabilities of each character given up to order−1
        before it."""
        seqs = seqs.cpu().numpy().astype(np.int64)
        p = np.full(seqs.shape, 1.0 / self.vocab)
        for k, (grams, counts, contexts, context_counts, context_types) in enumerate(
            self.tables, start=1
        ):
            if k > seqs.shape[1]:
                break
            keys = self._keys(seqs, k)
            n_hc = _lookup(grams, counts, keys)
            history = keys // self.vocab  # the k−1 characters before
            n_h, t_h = (
                _lookup(contexts, context_counts, history),
                _lookup(contexts, context_types, history),
            )
            lower = p[:, k - 1 :]
            p[:, k - 1 :] = np.where(
                n_h > 0, (n_hc + t_h * lower) / np.maximum(n_h + t_h, 1), lower
            )
        return torch.from_numpy(np.log(p))

    def perplexity(self, seqs, start=0):
        """exp(mean −log P) over positions start.. of every sequence (N, T)."""
        return float(torch.exp(-self.log_probs(seqs)[:, start:].mean()))


def distinct_ngrams(seqs, n=4):
    """Diversity of generated text (N, T): distinct character n-grams over all n-grams, pooled over
    the N rows (1 for text that never repeats an n-gram; Li et al. 2016's distinct-n)."""
    grams = seqs.unfold(1, n, 1).reshape(-1, n)  # (N·(T−n+1), n)
    return len(torch.unique(grams, dim=0)) / len(grams)


def continue_held_out(decoders, test, cfg, judge, chars, generator, device):
    """The AR gen_ppl protocol: continue the first seq_len − gen_tokens characters of gen_samples
    evenly spaced test windows by gen_tokens characters, once per decoder (next_logits(x) (N, V),
    temperature; 0 = greedy). → (texts "prompt ‖ continuation" per decoder, gen_ppl per decoder: the
    judge's perplexity of the generated characters, distinct_4 of the continuations per decoder, the
    judge's perplexity of the real continuations)."""
    held_out = test[torch.linspace(0, len(test) - 1, cfg.gen_samples).long(), : cfg.seq_len].to(
        device
    )
    P = cfg.seq_len - cfg.gen_tokens
    prompts = held_out[:, :P]
    texts, gen_ppl, distinct = [], [], []
    with torch.no_grad(), common.autocast(device):
        for next_logits, temperature in decoders:
            continuations = generate(next_logits, prompts, cfg.gen_tokens, temperature, generator)
            texts.append(
                [
                    decode(p, chars) + " ‖ " + decode(c, chars)
                    for p, c in zip(prompts, continuations)
                ]
            )
            gen_ppl.append(judge.perplexity(torch.cat([prompts, continuations], 1), start=P))
            distinct.append(distinct_ngrams(continuations.cpu()))
    return texts, gen_ppl, distinct, judge.perplexity(held_out, start=P)


def reference_bpc(data, judge):
    """Bits per character of the evaluated text (data["test"], the validation text under
    --validation) under two models that use no network: the training split's character frequencies
    (add-one smoothed; the unigram level) and the n-gram judge (its --judge-order)."""
    counts = torch.bincount(data["train"], minlength=len(data["chars"])).double() + 1
    log2_p = (counts / counts.sum()).log2()
    return {
        "unigram_bpc": float(-log2_p[data["test"]].mean()),
        "judge_bpc": math.log2(judge.perplexity(data["test"][None])),
    }


def ngram_accuracy(train, windows, vocab, order):
    """Next-character accuracy on windows (S, n+1) of the training split's argmax n-gram: each
    target x_{i+1} is predicted as the character most often after the (order−1) characters before it
    in training (ties: the lowest id), backing off to shorter contexts at the window's start and for
    contexts training never saw; the reference rows of the AR and Huginn tables (does a model see
    further back than n−1 characters?)."""
    # (T,), (S, n), (S, n)
    train, x, y = train.numpy(), windows[:, :-1].numpy(), windows[:, 1:].numpy()
    guess = np.full(y.shape, -1)
    # k characters of context, shortest first: a seen longer context overrides
    for k in range(order):
        context = np.zeros(len(train) - k, dtype=np.int64)
        for j in range(k):
            context = context * vocab + train[j : len(train) - k + j]
        grams, counts = np.unique(context * vocab + train[k:], return_counts=True)
        # by context, most frequent, lowest id
        first = np.lexsort((grams % vocab, -counts, grams // vocab))
        # (C,) sorted, each one's argmax
        contexts, at = np.unique(grams[first] // vocab, return_index=True)
        for i in range(max(k - 1, 0), x.shape[1]):
            query = np.zeros(len(x), dtype=np.int64)
            for j in range(i - k + 1, i + 1):
                query = query * vocab + x[:, j]
            pos = np.searchsorted(contexts, query).clip(max=len(contexts) - 1)
            guess[:, i] = np.where(
                contexts[pos] == query, grams[first][at][pos] % vocab, guess[:, i]
            )
    return float((guess == y).mean())


def reference_accuracy(data, windows, split):
    """{split}_bigram_acc and {split}_trigram_acc of ngram_accuracy on the evaluated windows (S,
    n+1)."""
    V = len(data["chars"])
    return {
        f"{split}_bigram_acc": ngram_accuracy(data["train"], windows, V, 2),
        f"{split}_trigram_acc": ngram_accuracy(data["train"], windows, V, 3),
    }


def write_samples(texts, run_dir):
    """run_dir/samples.txt: the generated texts, a blank line apart."""
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, "samples.txt"), "w", encoding="utf-8") as f:
        f.write("\n\n".join(texts) + "\n")


@dataclasses.dataclass
class Corpus:
    """A run's text on its device: training and test windows, the characters and the judge of
    gen_ppl."""

    # load_text's splits and characters ("test" holds the validation text under --validation)
    data: dict
    train: torch.Tensor  # (S_train, window) training windows at every offset
    test: torch.Tensor  # (S_test, window) test windows with non-overlapping targets
    test_eval: torch.Tensor  # (S_eval, window) the first --eval-sequences of them
    judge: CharNgram  # Witten–Bell character n-gram of the training split (None with --block)
    split: str  # "test", or "val" under --validation: the prefix of the metrics
    device: torch.device

    @property
    def chars(self):
        return self.data["chars"]

    def batch(self, size, generator):
        """`size` training windows drawn uniformly with `generator`: (size, window) on the
        device."""
        windows = self.train[torch.randint(len(self.train), (size,), generator=generator)]
        return common.to_device(windows, self.device)


def text_corpus(cfg, window, device):
    """--dataset cut into windows of `window` characters (data.load_windows) and the judge of its
    training split."""
    data, train, test, test_eval = load_windows(cfg, window)
    split = "val" if getattr(cfg, "validation", False) else "test"
    return Corpus(
        data,
        train,
        test,
        test_eval,
        # --block b only trains: --assemble evaluates
        CharNgram(data["train"], len(data["chars"]), cfg.judge_order) if cfg.block < 0 else None,
        split,
        device,
    )
