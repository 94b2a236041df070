"""Compose an anchor and an augmenting model that use different tokenizers.

The anchor's token ids are the input, as for any composed model. The *text* is what they decode
to, and the augmenting model reads that text through its own tokenizer. Build it with
``compose(anchor, augmenting, anchor_tokenizer=…, augmenting_tokenizer=…)``.

The rule, causal in text
    Anchor token t (the t-th real token of a row) stands for ``text_t = decode(anchor ids ≤ t)``.
    Its bridges read the augmenting model run on ``P_t = tokenize_A(text_t)`` — every token of
    it, and nothing else. So every augmenting token it reads ends where text_t ends or before,
    and what it reads is a function of text_t alone. This is what generation computes (the text
    ends at the newest token), and a forward pass over a whole sequence computes the same.

Why not "the augmenting tokens of the whole text that end before text_t ends"? Tokenizers look
ahead: where a token ends depends on the characters after it. A BPE that knows ``"Ġth"`` splits
``"the t"`` as ``the|Ġ|t`` but ``"the th"`` as ``the|Ġth``: with the whole text ``"the th"``, an
anchor token ending after ``"the t"`` would read no ``Ġ``/``t``, because of an ``h`` it has not
seen. Reading by end position lets later characters decide what earlier tokens read — a leak.

How one call computes it (the same code for training, a prompt and each generation step)
1. text_t and P_t for each new anchor token (special tokens have no text; a character whose
   UTF-8 bytes are split across byte-level tokens is left out until its last byte arrives).
2. Each row keeps a *layout*: the tokens of its latest text, P_last, with the augmenting model's
   KV cache. From the first token where P_last differs from what the layout held, the cache is
   cropped and the rest is fed: only the changed suffix is recomputed.
3. Anchor token t reads the tokens P_t shares with P_last (a prefix of the layout) plus its
   *tail*, the last tokens where P_t differs (``Ġ``, ``t`` above; usually none), computed on top
   of the cached prefix for this call only.

The rows of a batch tokenise to different lengths, so the layout is a (B, S) grid of *slots*;
empty slots are masked and positions come from the mask's cumulative sum, so each row computes
what it would alone. Recency bias (``recency_bias=True``): the distance from anchor token t to
augmenting token s is t minus the first anchor token from which s's state has been readable
without interruption; with identical tokenizers that is t − s, so the shared-token path is
reproduced exactly.

Tokenizers: any Hugging Face tokenizer, fast or slow — the rule needs no offset mappings. At
compose time each must give back a probe text unchanged (no lower-casing, stripped accents or
changed spaces), because the augmenting model reads the anchor's *decoded* text; with
``check_text=False`` a normalising tokenizer is accepted and the augmenting model reads its own
normalisation of that text (still causal). One augmenting model per composition; the encoder
ablation is not supported.
"""

from __future__ import annotations

from bisect import bisect_left
from copy import deepcopy
from dataclasses import dataclass, field, replace
from typing import Sequence

import torch
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

from ..core import CALMConfig, ComposedModel, Reading, SequenceState, positions_from_mask, register_variant
from ..core.factory import CROSS_TOKENIZER
from .tokenizers import check_tokenizer, identity

INCOMPLETE = "\ufffd"  # what a byte-level decoder writes for a character whose bytes are not all there


@dataclass
class _Row:
    """The augmenting side of one batch row, after the latest call.

    tokens: P_last, the augmenting ids of the text up to the row's latest anchor token.
    slots: the layout slot of each token (increasing).
    born: for each token, the anchor index from which its state has been readable without interruption.
    anchor_len: the row's real anchor tokens so far.
    """

    tokens: list[int] = field(default_factory=list)
    slots: list[int] = field(default_factory=list)
    born: list[int] = field(default_factory=list)
    anchor_len: int = 0


@dataclass
class _Read:
    """What one new anchor token reads: its column in the call, anchor index t, P_t and born."""

    column: int
    t: int
    tokens: list[int]
    born: list[int]


@dataclass
class _Alignment:
    """A sequence's cross-tokenizer state (``SequenceState.extra``). anchor_ids: (B, L) so far.
    real: (B, S), layout slots that hold a token. The sequence's keys/values per bridge are
    (B, H, S + tails, d): the layout, then the last call's tails."""

    anchor_ids: torch.Tensor | None = None
    rows: list[_Row] = field(default_factory=list)
    real: torch.Tensor | None = None

    def select(self, rows: torch.LongTensor) -> None:
        """Keep batch rows ``rows`` (B',), in that order (beam search); each kept row is a copy."""
        self.anchor_ids, self.real = (x.index_select(0, rows) if x is not None else None
                                      for x in (self.anchor_ids, self.real))
        self.rows = [deepcopy(self.rows[r]) for r in rows.tolist()]


@register_variant(CROSS_TOKENIZER)
class CrossTokenizerModel(ComposedModel):
    """A composed model whose augmenting model reads the anchor's text with its own tokenizer.

    Same API as :class:`ComposedModel` (forward, generate, save_pretrained, …); it changes only
    :meth:`read`, what each anchor token reads (see the module docstring for the rule). Build it
    with ``compose(..., anchor_tokenizer=…, augmenting_tokenizer=…)``; load it with
    ``from_pretrained(folder, anchor, augmenting, anchor_tokenizer=…, augmenting_tokenizer=…)``,
    which checks that both tokenizers are the ones the bridges were trained with.
    """

    shares_tokens = False  # input_ids are the anchor's; the augmenting model reads their text

    def __init__(self, anchor: PreTrainedModel, augmenting: Sequence[PreTrainedModel], config: CALMConfig,
                 anchor_tokenizer: PreTrainedTokenizerBase | None = None,
                 augmenting_tokenizer: PreTrainedTokenizerBase | None = None, check_text: bool = True):
        if len(augmenting) != 1:
            raise NotImplementedError(
                f"Composing across tokenizers takes one augmenting model; got {len(augmenting)}. "
                "Compose each separately, or give them the anchor's tokenizer.")
        check_tokenizer(anchor_tokenizer, "anchor", config.anchor.vocab_size, check_text)
        check_tokenizer(augmenting_tokenizer, "augmenting", config.augmenting[0].vocab_size, check_text)
        given = {"anchor": identity(anchor_tokenizer), "augmenting": identity(augmenting_tokenizer)}
        for role, saved in (config.tokenizers or {}).items():
            if given[role]["fingerprint"] != saved["fingerprint"]:
                raise ValueError(
                    f"The {role} tokenizer ({given[role]['name_or_path'] or given[role]['class']}, {given[role]['size']} "
                    f"tokens) is not the one the bridges were trained with ({saved['name_or_path'] or saved['class']}, "
                    f"{saved['size']} tokens).")
        super().__init__(anchor, augmenting, replace(config, tokenizers=given))
        self.anchor_tokenizer, self.augmenting_tokenizer = anchor_tokenizer, augmenting_tokenizer

    def read(self, sequence: SequenceState, input_ids, attention_mask, position_ids) -> Reading:
        """Re-tokenise the text of every new anchor token, feed the changed suffix of each row's
        augmenting tokens, compute the tails, and say what each new anchor token reads."""
        if sequence.extra is None:
            sequence.extra = _Alignment()
            sequence.augmenting_caches = [DynamicCache(config=self.augmenting[0].config)]  # tails build on it
            sequence.keys, sequence.values = [None] * len(self.bridges), [None] * len(self.bridges)
        align, past, (B, n) = sequence.extra, sequence.length, input_ids.shape
        ids = input_ids if align.anchor_ids is None else torch.cat([align.anchor_ids, input_ids], dim=1)
        real = torch.ones_like(ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        align.anchor_ids = ids
        if not align.rows:
            align.rows = [_Row() for _ in range(B)]
        reads = self._reads(align.rows, ids, real, past)
        lasts = [r[-1] if r else None for r in reads]
        self._feed(sequence, [last.tokens if last else row.tokens for last, row in zip(lasts, align.rows)])
        for row, last in zip(align.rows, lasts):
            if last is not None:
                row.born, row.anchor_len = last.born, last.t + 1
        spans = self._tails(sequence, reads)
        mask, distance = self._text_mask(sequence, reads, spans, n)
        return Reading(list(sequence.keys), list(sequence.values), mask, distance, past)

    # ------------------------------------------------------------------ the alignment
    def _texts(self, prefixes: list[list[int]]) -> list[str]:
        """text_t of each anchor prefix: special tokens have no text; an incomplete last character is left out."""
        texts = self.anchor_tokenizer.batch_decode(prefixes, skip_special_tokens=True)
        return [text.rstrip(INCOMPLETE) for text in texts]

    def _reads(self, rows: list[_Row], ids: torch.Tensor, real: torch.Tensor, past: int) -> list[list[_Read]]:
        """For each row, the new real anchor tokens of this call with their P_t and born lists.

        ids, real: (B, L) all anchor ids so far and which are real. born is carried from token to
        token: a token of P_t keeps its born if P_{t-1} had the same tokens up to it, else it is t.
        """
        jobs = []  # (row, column, t, anchor prefix)
        for b, row in enumerate(rows):
            row_ids = ids[b][real[b]].tolist()
            columns = torch.nonzero(real[b, past:]).flatten().tolist()
            jobs += [(b, c, row.anchor_len + i, row_ids[: row.anchor_len + i + 1]) for i, c in enumerate(columns)]
        if not jobs:
            return [[] for _ in rows]
        texts = self._texts([prefix for *_, prefix in jobs])
        tokenized = self.augmenting_tokenizer(texts, add_special_tokens=True)["input_ids"]
        longest = max(map(len, tokenized))
        limit = self.calm_config.augmenting[0].max_positions
        if limit is not None and longest > limit:
            raise ValueError(f"The text has {longest} augmenting tokens but the augmenting model accepts at most "
                             f"{limit}; shorten the input or max_new_tokens.")
        reads: list[list[_Read]] = [[] for _ in rows]
        for (b, column, t, _), tokens in zip(jobs, tokenized):
            before = reads[b][-1] if reads[b] else rows[b]
            keep = common_prefix(before.tokens, tokens)
            reads[b].append(_Read(column, t, tokens, before.born[:keep] + [t] * (len(tokens) - keep)))
        return reads

    def _feed(self, state: SequenceState, lasts: list[list[int]]) -> None:
        """Make each row's layout hold ``lasts[b]``: crop the cache and the bridges' keys/values
        at the first slot that changes in any row, and feed every row's tokens from there.

        The chunk fed is (B, W); rows with fewer new tokens leave empty slots at its end.
        """
        rows, cache = state.extra.rows, state.augmenting_caches[0]
        width = 0 if state.extra.real is None else state.extra.real.shape[1]
        changed = [common_prefix(row.tokens, last) for row, last in zip(rows, lasts)]
        crop = min((row.slots[k] for row, k in zip(rows, changed) if k < len(row.slots)), default=width)
        feeds = []
        for row, last in zip(rows, lasts):
            keep = bisect_left(row.slots, crop)
            feeds.append(last[keep:])
            row.slots, row.tokens = row.slots[:keep], last
        W, device = max(map(len, feeds)), state.extra.anchor_ids.device
        chunk = torch.zeros(len(rows), W, dtype=torch.long, device=device)
        chunk_real = torch.zeros(len(rows), W, dtype=torch.bool, device=device)
        for b, (row, feed) in enumerate(zip(rows, feeds)):
            chunk[b, : len(feed)] = torch.tensor(feed, dtype=torch.long)
            chunk_real[b, : len(feed)] = True
            row.slots += range(crop, crop + len(feed))
        state.extra.real = chunk_real if state.extra.real is None else torch.cat([state.extra.real[:, :crop], chunk_real], dim=1)
        if cache.get_seq_length() > crop:
            cache.crop(crop - cache.get_seq_length())
        if W:
            layout = state.extra.real.long()
            hidden = self.augmenting_states(0, chunk, layout, positions_from_mask(layout, crop, W, device), cache)
        for b, (spec, bridge) in enumerate(zip(self.specs, self.bridges)):
            keys, values = (_first_slots(x, bridge, len(rows), crop, device) for x in (state.keys[b], state.values[b]))
            if W:
                k, v = bridge.keys_values(hidden[spec.augmenting_layer])  # (B, H, W, d)
                keys, values = torch.cat([keys, k], dim=2), torch.cat([values, v], dim=2)
            state.keys[b], state.values[b] = keys, values

    def _tails(self, state: SequenceState, reads: list[list[_Read]]) -> list[list[tuple[int, int]]]:
        """Append after each bridge's layout keys/values those of the tails — the tokens of P_t
        that P_last does not share — computed on top of the cached layout, row by row.

        Returns, per row and new anchor token, (tokens shared with P_last, offset of the tail
        after the layout).
        """
        S, B = state.extra.real.shape[1], len(state.extra.rows)
        entries, spans, used = [], [], [0] * B  # entries: (row, shared, offset, tail)
        for b, (row, row_reads) in enumerate(zip(state.extra.rows, reads)):
            spans.append([])
            for read in row_reads:
                shared = common_prefix(read.tokens, row.tokens)
                spans[-1].append((shared, used[b]))
                if shared < len(read.tokens):
                    entries.append((b, shared, used[b], read.tokens[shared:]))
                    used[b] += len(read.tokens) - shared
        area = max(max(used), 1 if S == 0 else 0)  # attention needs at least one (masked) slot
        if entries:
            tails = self._tail_keys_values(state, entries, area)
        else:
            tails = [(k.new_zeros(B, k.shape[1], area, k.shape[3]),) * 2 for k in state.keys]
        for b, (k, v) in enumerate(tails):
            state.keys[b], state.values[b] = torch.cat([state.keys[b], k], dim=2), torch.cat([state.values[b], v], dim=2)
        return spans

    def _tail_keys_values(self, state: SequenceState, entries: list[tuple], area: int) -> list[tuple]:
        """Run the augmenting model on every tail at once, each on a copy of its row's cache
        masked to the tokens it shares with P_last. Returns per bridge (keys, values), each
        (B, H, area, d) with row b's tails at their offsets."""
        S, B, device = state.extra.real.shape[1], len(state.extra.rows), state.extra.real.device
        Wt = max(len(tail) for *_, tail in entries)
        ids = torch.zeros(len(entries), Wt, dtype=torch.long, device=device)
        mask = torch.zeros(len(entries), S + Wt, dtype=torch.long, device=device)
        dst_row, dst_slot, src_entry, src_pos = [], [], [], []
        for e, (b, shared, offset, tail) in enumerate(entries):
            row = state.extra.rows[b]
            bound = row.slots[shared] if shared < len(row.slots) else S  # the slots of tokens < shared
            mask[e, :bound] = state.extra.real[b, :bound]
            mask[e, S : S + len(tail)] = 1
            ids[e, : len(tail)] = torch.tensor(tail, dtype=torch.long)
            dst_row += [b] * len(tail)
            dst_slot += range(offset, offset + len(tail))
            src_entry += [e] * len(tail)
            src_pos += range(len(tail))
        index = torch.tensor([b for b, *_ in entries], device=device)
        layers = state.augmenting_caches[0].layers if S else []
        context = DynamicCache(ddp_cache_data=[(layer.keys[index], layer.values[index]) for layer in layers] or None)
        hidden = self.augmenting_states(0, ids, mask, positions_from_mask(mask, S, Wt, device), context)
        dst = (torch.tensor(dst_row, device=device), torch.tensor(dst_slot, device=device))
        src = (torch.tensor(src_entry, device=device), torch.tensor(src_pos, device=device))
        out = []
        for spec, bridge in zip(self.specs, self.bridges):
            pair = []
            for x in bridge.keys_values(hidden[spec.augmenting_layer]):  # (N, H, Wt, d)
                grid = x.new_zeros(B, area, x.shape[1], x.shape[3])
                pair.append(grid.index_put(dst, x.transpose(1, 2)[src]).transpose(1, 2))
            out.append(tuple(pair))
        return out

    def _text_mask(self, state: SequenceState, reads: list[list[_Read]], spans: list[list[tuple[int, int]]], n: int):
        """(B, n, S + tails) bool: anchor token t reads the layout slots of the tokens P_t shares
        with P_last, and its tail; and the (B, n, S + tails) distance t − born."""
        S, width, device = state.extra.real.shape[1], state.keys[0].shape[2], state.extra.real.device
        b_idx, t_idx, s_idx, distance = [], [], [], []
        for b, (row, row_reads, row_spans) in enumerate(zip(state.extra.rows, reads, spans)):
            for read, (shared, offset) in zip(row_reads, row_spans):
                slots = row.slots[:shared] + list(range(S + offset, S + offset + len(read.tokens) - shared))
                b_idx += [b] * len(slots)
                t_idx += [read.column] * len(slots)
                s_idx += slots
                distance += [read.t - born for born in read.born]
        mask = torch.zeros(len(state.extra.rows), n, width, dtype=torch.bool, device=device)
        distances = torch.zeros(len(state.extra.rows), n, width, dtype=torch.long, device=device)
        mask[b_idx, t_idx, s_idx] = True
        distances[b_idx, t_idx, s_idx] = torch.tensor(distance, dtype=torch.long, device=device)
        return mask, distances


# ---------------------------------------------------------------------- helpers
def common_prefix(a: list[int], b: list[int]) -> int:
    """Length of the common prefix of two token lists."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    return next(i for i in range(n) if a[i] != b[i])


def _first_slots(x: torch.Tensor | None, bridge, batch: int, crop: int, device) -> torch.Tensor:
    """The first ``crop`` slots of a bridge's keys or values, (B, H, crop, d); empty for a new sequence."""
    if x is None:
        return torch.zeros(batch, bridge.num_heads, 0, bridge.head_dim, dtype=bridge.key.weight.dtype, device=device)
    return x[:, :, :crop]


