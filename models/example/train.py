#!/usr/bin/python3
"""Train the built-in example model of qkscope: a small BERT trained by masked language
modelling on corpus.txt (King James Version), traced like a HuggingFace TorchScript export.

    /usr/bin/python3 models/example/make_vocab.py && /usr/bin/python3 models/example/train.py
    train.py [--steps N] [--out-dir DIR] [--threads N] [--lr X] [--dropout P]

The defaults are what made the committed bert_kjv.pt and train_log.txt (same seed, same
numbers on a rerun: the run is single-threaded and seeded; other BLAS builds may differ in the
last bits). 3000 steps took 270 s on this 2-core machine with light load, 573 s under heavy load.

Writes (default: next to this script) bert_kjv.pt, the traced BertModel of ../hf_bert.py with
forward (input_ids, attention_mask) -> (last_hidden_state, pooler_output), and train_log.txt.
The MLM head (BertForMaskedLM's cls.predictions, decoder tied to the word embeddings) exists
only in training. After training the log gets the held-out MLM loss/accuracy, per-head
attention statistics on 200 held-out lines, and shape tests of the saved file.
"""

import argparse
import math
import os
import sys
import time

sys.dont_write_bytecode = True  # keep models/ free of __pycache__
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))  # models/: hf_bert, hf_common, qk_record

import torch  # noqa: E402
from torch import nn  # noqa: E402

from bert_tokenizer import BertTokenizer  # noqa: E402
from hf_bert import BertConfig, BertModel  # noqa: E402
from hf_common import GELUActivation, get_extended_attention_mask  # noqa: E402
from qk_record import recording  # noqa: E402

SEED = 0
STEPS = 3000
BATCH = 32
MAX_LEN = 64  # [CLS] + up to 62 pieces + [SEP]; longer lines are split into chunks
LR = 3e-3
DROPOUT = 0.0  # in training; the saved model's (inactive, eval) dropout modules get HF's 0.1
EXPORT_DROPOUT = 0.1
WARMUP = 200
WEIGHT_DECAY = 0.01
LOG_EVERY = 100
MASK_PROB = 0.15
N_HELDOUT = 200  # lines 20, 41, 62, ... (every 21st line) are held out of training
HELDOUT_STRIDE = 21
TRACE_SHAPE = (8, 64)
STRONG = 0.2  # a head 'attends to' a target that gets this much of its weight on average
PAD, UNK, CLS, SEP, MASK = 0, 1, 2, 3, 4
N_SPECIAL = 5


def config_for(vocab_size, dropout=DROPOUT):
    return BertConfig(
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        vocab_size=vocab_size,
        hidden_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=256,
        max_position_embeddings=128,
    )


class BertLMPredictionHead(nn.Module):
    """BertForMaskedLM's cls.predictions: dense -> gelu -> LayerNorm -> decoder (tied) + bias."""

    def __init__(self, config, word_embeddings):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.transform_act_fn = GELUActivation()
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.word_embeddings = word_embeddings  # the decoder weight is tied to it, as in HF
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden_states):
        hidden_states = self.LayerNorm(self.transform_act_fn(self.dense(hidden_states)))
        return nn.functional.linear(hidden_states, self.word_embeddings.weight, self.bias)


class BertForMaskedLM(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.bert = BertModel(config)
        self.cls = BertLMPredictionHead(config, self.bert.embeddings.word_embeddings)

    def forward(self, input_ids, attention_mask, labels):
        """Mean cross entropy and (predictions, targets) over the positions where labels >= 0;
        the head runs on those positions only (the loss is the same as HF's)."""
        hidden = self.bert(input_ids, attention_mask)[0]
        selected = labels >= 0
        logits = self.cls(hidden[selected])
        targets = labels[selected]
        return nn.functional.cross_entropy(logits, targets), logits.argmax(-1), targets


def sinusoidal(n_positions, dim):
    """The Transformer's fixed position code: sin/cos of position * 10000^(-2i/dim)."""
    position = torch.arange(n_positions, dtype=torch.float32)[:, None]
    inv_freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(n_positions, dim)
    table[:, 0::2] = torch.sin(position * inv_freq)
    table[:, 1::2] = torch.cos(position * inv_freq)
    return table


def init_weights(model, std=0.02):
    """HF BertPreTrainedModel._init_weights (initializer_range 0.02), except that the (still
    learned) position embeddings start as the sinusoidal code scaled to the same standard
    deviation, a start from which attention by relative offset is easy to express. What made
    the positional heads appear within 3000 steps was the learning rate (3e-3; at 1e-3 every
    head was still near uniform after 2000 steps); this start was not compared separately
    with HF's random one at 3e-3."""
    for module in model.modules():
        if isinstance(module, nn.Linear):
            module.weight.data.normal_(0.0, std)
            if module.bias is not None:
                module.bias.data.zero_()
        elif isinstance(module, nn.Embedding):
            module.weight.data.normal_(0.0, std)
            if module.padding_idx is not None:
                module.weight.data[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            module.bias.data.zero_()
            module.weight.data.fill_(1.0)
    table = model.bert.embeddings.position_embeddings.weight
    table.data.copy_(sinusoidal(*table.shape) * (std * math.sqrt(2.0)))  # sin/cos have std 1/sqrt(2)


# --- data -------------------------------------------------------------------------------------


def to_sequences(ids):
    """[CLS] chunk [SEP] for each chunk of at most MAX_LEN - 2 pieces."""
    step = MAX_LEN - 2
    return [[CLS] + ids[i : i + step] + [SEP] for i in range(0, max(len(ids), 1), step)]


def pad_batch(sequences, length=None):
    length = length or max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), length), PAD, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), length), dtype=torch.long)
    for row, seq in enumerate(sequences):
        input_ids[row, : len(seq)] = torch.tensor(seq)
        attention_mask[row, : len(seq)] = 1
    return input_ids, attention_mask


def epoch_batches(sequences, generator, pool=50):
    """One epoch of batches, BATCH sequences each (the last partial one dropped): shuffle, sort
    each pool of `pool` batches by length so that batches need little padding, shuffle the
    batches."""
    order = torch.randperm(len(sequences), generator=generator).tolist()
    batches = []
    for start in range(0, len(order), BATCH * pool):
        group = sorted(order[start : start + BATCH * pool], key=lambda i: len(sequences[i]))
        batches.extend(group[i : i + BATCH] for i in range(0, len(group) - BATCH + 1, BATCH))
    return [[sequences[i] for i in batches[j]] for j in torch.randperm(len(batches), generator=generator).tolist()]


def mask_tokens(input_ids, vocab_size, generator):
    """BERT masking: 15% of the non-special tokens are predicted; of those 80% -> [MASK],
    10% -> a random non-special token, 10% unchanged. Returns (inputs, labels), labels -100
    where nothing is predicted."""
    labels = input_ids.clone()
    candidates = input_ids >= N_SPECIAL
    chosen = (torch.rand(input_ids.shape, generator=generator) < MASK_PROB) & candidates
    labels[~chosen] = -100
    inputs = input_ids.clone()
    draw = torch.rand(input_ids.shape, generator=generator)
    inputs[chosen & (draw < 0.8)] = MASK
    random_ids = torch.randint(N_SPECIAL, vocab_size, input_ids.shape, generator=generator)
    use_random = chosen & (draw >= 0.8) & (draw < 0.9)
    inputs[use_random] = random_ids[use_random]
    return inputs, labels


# --- evaluation -------------------------------------------------------------------------------


@torch.no_grad()
def mlm_eval(model, sequences, vocab_size, repeats=5):
    """Masked-token loss and accuracy on `sequences`, with fixed (seeded) masks drawn `repeats` times."""
    model.eval()
    generator = torch.Generator().manual_seed(SEED + 1)
    loss_sum, correct, total = 0.0, 0, 0
    for _ in range(repeats):
        for start in range(0, len(sequences), 50):
            input_ids, attention_mask = pad_batch(sequences[start : start + 50])
            inputs, labels = mask_tokens(input_ids, vocab_size, generator)
            loss, predictions, targets = model(inputs, attention_mask, labels)
            loss_sum += loss.item() * targets.numel()
            correct += (predictions == targets).sum().item()
            total += targets.numel()
    return loss_sum / total, correct / total, total


@torch.no_grad()
def attention_stats(bert, sequences, punct_ids, head_dim):
    """Per layer and head, the attention weight that text tokens (queries 1 .. n-2, i.e. not
    [CLS]/[SEP]) give to: the previous token, the next token, themselves, [CLS], [SEP], and
    punctuation (all punctuation tokens together), and the row's largest weight, averaged over
    all such queries of the held-out sequences. Probabilities are recomputed from the q/k that
    the eager model records (softmax(q k^T / sqrt(head_dim) + additive mask), the model's own)."""
    bert.eval()
    input_ids, attention_mask = pad_batch(sequences, MAX_LEN)
    with recording() as sites:
        bert(input_ids, attention_mask)
    ext = get_extended_attention_mask(attention_mask, torch.float32)
    lengths = attention_mask.sum(1)
    is_punct = torch.zeros_like(input_ids, dtype=torch.bool)
    for pid in punct_ids:
        is_punct |= input_ids == pid
    # query mask: text tokens only
    pos = torch.arange(MAX_LEN)
    query = (pos[None, :] >= 1) & (pos[None, :] <= (lengths[:, None] - 2))
    n_query = query.sum().item()
    rows = []
    for layer, (q, k) in enumerate(sites):
        probs = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(head_dim) + ext, dim=-1)  # B H S S
        for head in range(probs.shape[1]):
            p = probs[:, head]  # B S S
            prev = torch.diagonal(p, offset=-1, dim1=1, dim2=2)  # p[i, i-1] for i >= 1: [B, S-1]
            nxt = torch.diagonal(p, offset=1, dim1=1, dim2=2)  # p[i, i+1] for i <= S-2
            own = torch.diagonal(p, dim1=1, dim2=2)
            cls = p[:, :, 0]
            sep = p.gather(2, (lengths - 1)[:, None, None].expand(-1, MAX_LEN, 1)).squeeze(2)
            punct = (p * is_punct[:, None, :].float()).sum(-1)
            peak = p.max(-1).values

            def mean_over_queries(values, first=0):
                mask = query[:, first : first + values.shape[1]]
                return (values * mask).sum().item() / n_query

            rows.append(
                (
                    layer,
                    head,
                    mean_over_queries(prev, first=1),
                    mean_over_queries(nxt, first=0),
                    mean_over_queries(own),
                    mean_over_queries(cls),
                    mean_over_queries(sep),
                    mean_over_queries(punct),
                    mean_over_queries(peak),
                )
            )
    mean_uniform = (query.float() / lengths[:, None]).sum().item() / n_query
    return rows, mean_uniform, n_query


# --- main -------------------------------------------------------------------------------------


class Log:
    def __init__(self, path):
        self.file = open(path, "w", encoding="utf-8")

    def __call__(self, text=""):
        print(text, flush=True)
        self.file.write(text + "\n")
        self.file.flush()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--out-dir", default=HERE)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--lr", type=float, default=LR)
    parser.add_argument("--dropout", type=float, default=DROPOUT)
    args = parser.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)

    torch.manual_seed(SEED)
    # One thread: on this shared 2-core machine (load ~6 from compiles) two OpenMP threads made a
    # step ~20x slower (2.2 s instead of 0.1 s) by spinning; the model is too small to gain.
    torch.set_num_threads(args.threads)
    log = Log(os.path.join(args.out_dir, "train_log.txt"))
    t_start = time.time()

    tokenizer = BertTokenizer(os.path.join(HERE, "vocab.txt"))
    vocab_size = len(tokenizer.vocab)
    with open(os.path.join(HERE, "corpus.txt"), encoding="utf-8") as f:
        lines = [line.rstrip("\n") for line in f if line.strip()]
    heldout_index = set(range(HELDOUT_STRIDE - 1, len(lines), HELDOUT_STRIDE)[:N_HELDOUT])
    train_seqs, heldout_seqs = [], []
    for i, line in enumerate(lines):
        seqs = to_sequences(tokenizer.encode(line))
        if i in heldout_index:
            heldout_seqs.append(seqs[0])  # first chunk only: one sequence per held-out line
        else:
            train_seqs.extend(seqs)
    n_pieces = sum(len(s) for s in train_seqs)
    config = config_for(vocab_size, args.dropout)
    log(f"qkscope example: BERT MLM on models/example/corpus.txt (KJV), torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads")
    warmup = min(WARMUP, max(args.steps // 10, 1))
    log(f"vocab {vocab_size}; corpus {len(lines)} lines: {len(lines) - len(heldout_index)} train lines -> "
        f"{len(train_seqs)} sequences ({n_pieces} tokens incl. [CLS]/[SEP]), "
        f"{len(heldout_seqs)} held-out lines")
    log(f"config: layers {config.num_hidden_layers}, heads {config.num_attention_heads}, "
        f"hidden {config.hidden_size}, intermediate {config.intermediate_size}, "
        f"max positions {config.max_position_embeddings}, "
        f"dropout {config.hidden_dropout_prob}/{config.attention_probs_dropout_prob}")
    log(f"training: steps {args.steps}, batch {BATCH} (length-bucketed, padded to the longest, max {MAX_LEN}), "
        f"AdamW lr {args.lr} wd {WEIGHT_DECAY}, warmup {warmup} then linear decay to 0, clip 1.0, "
        f"mask {MASK_PROB} (80/10/10), seed {SEED}")

    model = BertForMaskedLM(config)
    init_weights(model)
    n_params = sum(p.numel() for p in model.bert.parameters())
    n_head = sum(p.numel() for n, p in model.cls.named_parameters() if not n.startswith("word_embeddings"))
    log(f"BertModel parameters: {n_params} ({n_params * 4 / 1e6:.2f} MB float32); MLM head adds {n_head}")

    no_decay = [p for n, p in model.named_parameters() if n.endswith("bias") or "LayerNorm" in n]
    decay = [p for n, p in model.named_parameters() if not (n.endswith("bias") or "LayerNorm" in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr, betas=(0.9, 0.98), eps=1e-6,
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / warmup if s < warmup else max(0.0, (args.steps - s) / (args.steps - warmup))
    )

    generator = torch.Generator().manual_seed(SEED)
    batches = []
    log()
    log(f"{'step':>6} {'loss':>7} {'acc':>6} {'lr':>9} {'seconds':>8}")
    model.train()
    t_train = time.time()
    window_loss, window_correct, window_total, window_steps = 0.0, 0, 0, 0
    for step in range(1, args.steps + 1):
        if not batches:
            batches = epoch_batches(train_seqs, generator)
        batch = batches.pop()
        input_ids, attention_mask = pad_batch(batch)
        inputs, labels = mask_tokens(input_ids, vocab_size, generator)
        loss, predictions, targets = model(inputs, attention_mask, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        window_loss += loss.item()
        window_correct += (predictions == targets).sum().item()
        window_total += targets.numel()
        window_steps += 1
        if step % LOG_EVERY == 0 or step == args.steps or step in (1, 10):
            log(f"{step:>6} {window_loss / window_steps:>7.4f} {window_correct / max(window_total, 1):>6.4f} "
                f"{schedule.get_last_lr()[0]:>9.2e} {time.time() - t_train:>8.1f}")
            window_loss, window_correct, window_total, window_steps = 0.0, 0, 0, 0
    train_seconds = time.time() - t_train
    epochs = args.steps * BATCH / len(train_seqs)
    log(f"trained {args.steps} steps in {train_seconds:.1f} s ({epochs:.1f} epochs)")

    # --- evaluation ---
    model.eval()
    train_sample = train_seqs[:: max(len(train_seqs) // 200, 1)][:200]
    train_loss, train_acc, train_n = mlm_eval(model, train_sample, vocab_size)
    ho_loss, ho_acc, ho_n = mlm_eval(model, heldout_seqs, vocab_size)
    log(f"MLM, fixed masks x5: 200 training sequences loss {train_loss:.4f} acc {train_acc:.4f} "
        f"({train_n} targets); "
        f"held-out loss {ho_loss:.4f} acc {ho_acc:.4f} ({ho_n} targets)")

    punct_ids = [i for t, i in tokenizer.vocab.items() if len(t) == 1 and not t.isalnum()]
    head_dim = config.hidden_size // config.num_attention_heads
    rows, uniform, n_query = attention_stats(model.bert, heldout_seqs, punct_ids, head_dim)
    log()
    log(f"attention on {len(heldout_seqs)} held-out lines: mean weight that a text token ({n_query} queries; "
        f"not [CLS]/[SEP]) gives to each target; uniform would give {uniform:.3f} per token")
    names = ("prev", "next", "self", "[CLS]", "[SEP]", "punct")
    log(f"{'layer':>5} {'head':>4} " + " ".join(f"{n:>6}" for n in names + ('max',)) + "  targets >= 0.2")
    summary = {}
    for layer, head, *values in rows:
        strong = [(names[j], values[j]) for j in range(len(names)) if values[j] >= STRONG]
        strong.sort(key=lambda item: -item[1])
        for name, value in strong:
            summary.setdefault(name, []).append(f"L{layer}H{head} {value:.2f}")
        label = ", ".join(f"{name} {value:.2f}" for name, value in strong) or "diffuse"
        log(f"{layer:>5} {head:>4} " + " ".join(f"{v:>6.3f}" for v in values) + f"  {label}")
    log(f"heads giving >= {STRONG} of their weight (>= {STRONG / uniform:.0f}x uniform) to one target:")
    for name in names:
        log(f"  {name:>5}: {', '.join(summary.get(name, ['none']))}")

    # --- trace and save: BertModel only, HF style (eval, positional example inputs) ---
    trace_ids, trace_mask = pad_batch(heldout_seqs[: TRACE_SHAPE[0]], TRACE_SHAPE[1])
    bert = model.bert.eval()
    for module in bert.modules():  # inactive in eval; set to HF's default so the graph reads like an export
        if isinstance(module, nn.Dropout):
            module.p = EXPORT_DROPOUT
    with torch.no_grad():
        traced = torch.jit.trace(bert, (trace_ids, trace_mask))
    pt_path = os.path.join(args.out_dir, "bert_kjv.pt")
    torch.jit.save(traced, pt_path)
    size = os.path.getsize(pt_path)
    log()
    log(f"traced BertModel at input_ids/attention_mask {list(trace_ids.shape)}; wrote bert_kjv.pt, {size} bytes")
    if size > 2_000_000:
        raise SystemExit("bert_kjv.pt is over 2 MB: reduce VOCAB_SIZE in make_vocab.py")

    # --- shape tests of the saved file against the eager model ---
    loaded = torch.jit.load(pt_path)
    loaded.eval()
    long_seqs = [s for s in heldout_seqs if len(s) >= 20]
    text = [t for s in heldout_seqs[40:50] for t in s[1:-1]]

    def cut(seq, n):  # the first n - 1 tokens of seq, then [SEP]
        return seq[: n - 1] + [SEP]

    tests = {
        "3 x 20, lengths 20/14/7": pad_batch([cut(long_seqs[0], 20), cut(long_seqs[1], 14), cut(long_seqs[2], 7)]),
        "8 x 64, right padded": pad_batch(heldout_seqs[20:28], 64),
        "1 x 5": pad_batch([cut(long_seqs[3], 5)]),
        "2 x 128 (max positions), lengths 128/90": pad_batch(
            [[CLS] + text[:126] + [SEP], [CLS] + text[200:288] + [SEP]]
        ),
    }
    for name, (ids, mask) in tests.items():
        with torch.no_grad():
            for _ in range(3):  # the profiling executor re-optimizes on the 2nd run
                got = loaded(ids, mask)
            want = bert(ids, mask)
        diff = max((g - w).abs().max().item() for g, w in zip(got, want))
        real = mask.bool()
        diff_real = (got[0] - want[0])[real].abs().max().item()
        log(f"shape test {name}: input {list(ids.shape)}, outputs {[list(t.shape) for t in got]}, "
            f"max |traced - eager| {diff:.2e} (real tokens {diff_real:.2e})")
        if diff_real > 1e-4:
            raise SystemExit(f"traced model differs from eager on {name}")
    # Padding invariance: a sequence alone == the same sequence right padded in a batch.
    ids, mask = pad_batch(heldout_seqs[20:28], 64)
    with torch.no_grad():
        batch_out = loaded(ids, mask)[0]
        n = int(mask[3].sum())
        alone = loaded(ids[3:4, :n], mask[3:4, :n])[0]
    log(f"padding invariance: row 3 ({n} tokens) alone vs in the padded 8 x 64 batch: max diff "
        f"{(alone[0] - batch_out[3, :n]).abs().max().item():.2e}")
    log(f"total wall time {time.time() - t_start:.1f} s")


if __name__ == "__main__":
    main()
