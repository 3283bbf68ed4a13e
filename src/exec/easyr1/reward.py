"""curric's verifiable rewards for EasyR1, in plain Python (standard library only).

Written by `curric export easyr1`: TERMS below is the phase's reward set, the rest is the same
for every phase. Each function mirrors the Rust term of the same name in curric's `reward`
module; tests/golden/rewards.jsonl is scored by both and must agree.

EasyR1 calls `compute_score(reward_inputs, **reward_function_kwargs)` with a batch of
{"response", "response_length", "ground_truth"}. curric writes `ground_truth` as a JSON string
carrying the answer and the per-sample data the rewards read (id, key_words, objects); a plain
string is read as the answer alone. The result has `overall` (the weighted sum) and one key per
term, so every term is logged and can be EasyR1's `filter_key`.

With `results=PATH` (a probe or eval phase), each scored response is also appended to PATH as a
JSON line {"id", "overall", "passed", "accuracy", "length"}, `passed` meaning overall >= `pass_threshold`:
EasyR1 reports only aggregates, and curric builds its pass-rate table and eval table from these
lines. With `groups=True`, each score also has `informative` (see compute_score).
"""
import json
import math
import os
import re

REWARD_NAME = "curric"
REWARD_TYPE = "batch"

# (label, term, weight, args): filled in by `curric export easyr1`.
TERMS = []

# ---- answers -------------------------------------------------------------------------------

_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?")
_CHOICE = re.compile(r"\s*(?:option\s+)?\(?([A-Za-z])\)?(?:[.):]|\s|\Z)")


def boxed(text):
    found, start = None, 0
    while True:
        pos = text.find("\\boxed{", start)
        if pos < 0:
            return found
        begin = pos + len("\\boxed{")
        depth, end = 1, None
        for i in range(begin, len(text)):
            c = text[i]
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    end = i
                    break
        if end is None:
            return found
        found = text[begin:end].strip()
        start = end + 1


def answer_tag(text):
    close = text.rfind("</answer>")
    if close < 0:
        return None
    open_ = text.rfind("<answer>", 0, close)
    if open_ < 0:
        return None
    return text[open_ + len("<answer>"):close].strip()


def final_answer(text):
    lower = text.lower()
    # As in curric: only trust a match when lowercasing kept every length.
    if len(lower.encode()) != len(text.encode()):
        return None
    key = "the final answer is"
    pos = lower.rfind(key)
    if pos < 0:
        return None
    rest = text[pos + len(key):].lstrip(": *")
    line = rest.split("\n")[0]
    if line.endswith("\r"):
        line = line[:-1]
    line = line.strip().rstrip(".*").strip()
    return line or None


def last_number(text):
    found = _NUMBER.findall(text)
    return found[-1] if found else None


def extract(text, method):
    if method == "boxed":
        return boxed(text)
    if method == "answer_tag":
        return answer_tag(text)
    if method == "final_answer":
        return final_answer(text)
    if method == "last_number":
        return last_number(text)
    for f in (boxed, answer_tag, final_answer, last_number):
        found = f(text)
        if found is not None:
            return found
    return None


def _parse_plain(t):
    m = _NUMBER.match(t)
    if m and m.end() == len(t) and "," in t:
        t = t.replace(",", "")
    if not t or not all(c in "0123456789+-.eE" for c in t):
        return None
    try:
        x = float(t)
    except ValueError:
        return None
    return x if math.isfinite(x) else None


def parse_number(s):
    t = "".join(c for c in s.strip() if not c.isspace())
    for p in ("$", "\\$", "\\%", "%", "\\(", "\\)", "\\!"):
        t = t.replace(p, "")
    t = t.rstrip(".")
    while t.startswith("+"):
        t = t[1:]
    inner = None
    if t.startswith("\\frac{"):
        inner = t[len("\\frac{"):]
    elif t.startswith("\\dfrac{"):
        inner = t[len("\\dfrac{"):]
    elif t.startswith("-\\frac{"):
        inner = ""
    if inner is not None:
        if inner == "":
            x = parse_number(t[1:])
            return None if x is None else -x
        if not inner.endswith("}") or "}{" not in inner[:-1]:
            return None
        a, b = inner[:-1].split("}{", 1)
        a, b = parse_number(a), parse_number(b)
        if a is None or b is None:
            return None
        return _divide(a, b)
    if "/" in t:
        a, b = t.split("/", 1)
        a, b = _parse_plain(a), _parse_plain(b)
        if a is None or b is None:
            return None
        return _divide(a, b)
    return _parse_plain(t)


def _divide(a, b):
    # f64 division as Rust does it: x/0 is ±inf or NaN, which is then refused.
    if b == 0:
        return None
    x = a / b
    return x if math.isfinite(x) else None


def numeric_eq(a, b, tol):
    return abs(a - b) <= tol * max(abs(a), abs(b), 1.0)


def normalize(s):
    s = s.replace("\\text{", "").replace("\\mathrm{", "")
    s = "".join(c.lower() for c in s if not c.isspace())
    s = s.rstrip(".")
    if s.count("}") > s.count("{"):
        s = s.rstrip("}")
    return s


def choice_letter(s):
    m = _CHOICE.match(s)
    return m.group(1).upper() if m else None


def matches(predicted, reference, compare, tolerance):
    def numeric():
        a, b = parse_number(predicted), parse_number(reference)
        if a is None or b is None:
            return None
        return numeric_eq(a, b, tolerance)

    def exact():
        p = normalize(predicted)
        return p != "" and p == normalize(reference)

    if compare == "numeric":
        return bool(numeric())
    if compare == "exact":
        return exact()
    if compare == "choice":
        a, b = choice_letter(predicted), choice_letter(reference)
        return a is not None and a == b
    n = numeric()
    return exact() if n is None else n


# ---- terms ---------------------------------------------------------------------------------


def accuracy(text, sample, args):
    ans = extract(text, args.get("extract", "auto"))
    if ans is None:
        return 0.0
    ok = matches(ans, sample["answer"], args.get("compare", "auto"), float(args.get("tolerance", 1e-6)))
    return 1.0 if ok else 0.0


def _think_block(text):
    t = text.lstrip()
    if not t.startswith("<think>"):
        return None
    body = t[len("<think>"):]
    end = body.find("</think>")
    if end < 0 or body[:end].strip() == "" or "<think>" in body:
        return None
    rest = body[end + len("</think>"):]
    return None if "</think>" in rest else rest


def _boxed_ends(rest):
    at = rest.find("\\boxed{")
    if at < 0 or rest.find("\\boxed{", at + 1) >= 0:
        return False
    inner = rest[at + len("\\boxed{"):]
    depth = 1
    for i, c in enumerate(inner):
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                after = inner[i + 1:].strip()
                return inner[:i].strip() != "" and after in ("", ".")
    return False


def format_ok(text, args):
    style = args.get("style", "think_then_boxed")
    if style == "think_then_boxed":
        rest = _think_block(text)
        return rest is not None and _boxed_ends(rest)
    if style == "think_then_answer":
        rest = _think_block(text)
        if rest is None:
            return False
        r = rest.strip()
        a = answer_tag(r)
        return (r.startswith("<answer>") and r.endswith("</answer>")
                and r.count("<answer>") == 1 and r.count("</answer>") == 1
                and a is not None and a != "")
    if style == "headers":
        at = 0
        for h in args.get("headers", []):
            p = text.find(h, at)
            if p < 0:
                return False
            at = p + len(h)
        return True
    if style == "regex":
        return re.fullmatch(args["pattern"], text, re.S) is not None
    raise ValueError(f"unknown format style {style!r}")


def format_(text, sample, args):
    return 1.0 if format_ok(text, args) else 0.0


def soft_overlong(length, args):
    mx, buf = int(args["max"]), int(args["buffer"])
    start = mx - buf
    if length <= start:
        return 0.0
    if length <= mx:
        return (start - length) / buf
    return -1.0


def length_cap(length, args):
    mx = int(args["max"])
    return 1.0 if length <= mx else mx / length


def _contains_words(hay, needle):
    if not needle:
        return False
    i = hay.find(needle)
    while i >= 0:
        before = hay[i - 1] if i > 0 else ""
        j = i + len(needle)
        after = hay[j] if j < len(hay) else ""
        if not before.isalnum() and not after.isalnum():
            return True
        i = hay.find(needle, j)  # matches do not overlap, as in curric
    return False


def keyword_recall(text, sample, args):
    kws = [k.strip().lower() for k in sample.get("key_words", [])]
    kws = [k for k in kws if k]
    if not kws:
        return 1.0
    t = text.lower()
    return sum(1 for k in kws if _contains_words(t, k)) / len(kws)


_COLOURS = ["red", "green", "blue", "yellow", "orange", "purple", "black", "white", "gray", "grey",
            "pink", "brown", "cyan", "magenta"]
_SHAPES = ["circle", "square", "triangle", "rectangle", "star", "diamond", "hexagon", "pentagon",
           "ellipse", "cross", "heart"]
_COUNTS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]


def _count(word):
    if word.isascii() and word.isdigit() and int(word) < 2**64:
        return int(word)
    return _COUNTS.index(word) if word in _COUNTS else None


def scene_mentions(text, truth):
    nouns, attrs = list(_SHAPES), list(_COLOURS)
    for o in truth:
        ws = [w.lower() for w in o.split()]
        if ws:
            nouns.append(ws[-1])
            attrs.extend(ws[:-1])
    words = [w for w in "".join(c if c.isalnum() else " " for c in text.lower()).split(" ") if w]
    out = {}
    for i, w in enumerate(words):
        s = w[:-2] if w.endswith("es") and w[:-2] in nouns else None
        if s is None and w.endswith("s"):
            s = w[:-1]
        singular = s if s is not None and s in nouns else w
        if singular not in nouns:
            continue
        j, name = i, singular
        if j > 0 and words[j - 1] in attrs:
            name = f"{words[j - 1]} {name}"
            j -= 1
        count = _count(words[j - 1]) if j > 0 else None
        count = min(1 if count is None else count, 64)
        out[name] = out.get(name, 0) + count
    return out


def scene_prf(text, truth):
    pred = scene_mentions(text, truth)
    gt = {}
    for o in truth:
        key = " ".join(w.lower() for w in o.split())
        if key:
            gt[key] = gt.get(key, 0) + 1
    n_pred, n_gt = sum(pred.values()), sum(gt.values())
    if n_pred == 0 and n_gt == 0:
        return 1.0, 1.0, 1.0
    tp = sum(min(c, gt.get(k, 0)) for k, c in pred.items())
    if tp == 0:
        return 0.0, 0.0, 0.0
    p, r = tp / n_pred, tp / n_gt
    return p, r, 2 * p * r / (p + r)


def scene_f1(text, sample, args):
    return scene_prf(text, sample.get("objects", []))[2]


def score_term(term, args, text, length, sample):
    if term == "accuracy":
        return accuracy(text, sample, args)
    if term == "format":
        return format_(text, sample, args)
    if term == "soft_overlong":
        return soft_overlong(length, args)
    if term == "length_cap":
        return length_cap(length, args)
    if term == "keyword_recall":
        return keyword_recall(text, sample, args)
    if term == "scene_f1":
        return scene_f1(text, sample, args)
    raise ValueError(f"reward term {term!r} has no Python form")


# ---- EasyR1's entry point ------------------------------------------------------------------


def read_ground_truth(gt):
    """The sample as curric wrote it into `ground_truth`, or a plain answer string."""
    if isinstance(gt, str):
        try:
            v = json.loads(gt)
        except ValueError:
            v = None
        if isinstance(v, dict) and "answer" in v:
            return v
        return {"answer": gt}
    if isinstance(gt, dict):
        return gt
    return {"answer": str(gt)}


def score(text, length, sample, terms=None):
    """{"overall": weighted sum, label: term score, ...} for one response."""
    out = {"overall": 0.0}
    for label, term, weight, args in (TERMS if terms is None else terms):
        s = float(score_term(term, args, text, length, sample))
        if not math.isfinite(s):
            s = 0.0
        out[label] = s
        out["overall"] += weight * s
    return out


def compute_score(reward_inputs, results=None, pass_threshold=0.5, groups=False):
    scores, samples = [], []
    for r in reward_inputs:
        sample = read_ground_truth(r["ground_truth"])
        samples.append(sample)
        scores.append(score(r["response"], int(r["response_length"]), sample))
    if groups:
        # EasyR1 hands the whole step's rollouts at once; a group is a sample id's rollouts.
        # `informative` (1 when the group's rewards differ) averages to the share of
        # informative groups, which curric's informative_below stop reads.
        by_id = {}
        for sample, s in zip(samples, scores):
            by_id.setdefault(sample.get("id"), set()).add(s["overall"])
        for sample, s in zip(samples, scores):
            s["informative"] = 1.0 if len(by_id[sample.get("id")]) > 1 else 0.0
    if results:
        lines = [json.dumps({"id": sample.get("id"), "overall": s["overall"],
                             "passed": s["overall"] >= pass_threshold,
                             "accuracy": s.get("accuracy"), "length": int(r["response_length"])})
                 for r, sample, s in zip(reward_inputs, samples, scores)]
        if lines:
            # One write per batch, appended: EasyR1 may call this from several reward workers.
            with open(results, "a", encoding="utf-8") as f:
                f.write("\n".join(lines) + "\n")
                f.flush()
                os.fsync(f.fileno())
    return scores
