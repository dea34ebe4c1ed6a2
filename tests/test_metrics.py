"""Metric code against hand-computed cases (method.md section 7)."""
import numpy as np
import pytest

from jsa_rt.train import metrics


def test_flickr_consensus_map_two_annotators():
    # 256-px boxes -> x224/256 truncated: [0,0,128,128] -> [0,0,112,112]; [64,64,192,192] -> [56,56,168,168]
    gt = metrics.gt_map_flickr([[0, 0, 128, 128], [64, 64, 192, 192]])
    assert gt.shape == (224, 224)
    assert gt[0, 0] == 0.5 and gt[111, 111] == 1.0 and gt[60, 60] == 1.0
    assert gt[150, 150] == 0.5 and gt[167, 167] == 0.5 and gt[168, 168] == 0.0 and gt[200, 10] == 0.0
    assert set(np.unique(gt)) == {0.0, 0.5, 1.0}
    assert gt.sum() == pytest.approx(0.5 * 112 * 112 * 2)      # 2 * 0.5 * area, the overlap capped at 1


def test_flickr_consensus_clips_at_one_and_truncates():
    gt = metrics.gt_map_flickr([[0, 0, 100, 100]] * 3)           # 1.5 -> 1
    assert gt.max() == 1.0
    assert gt[:, 87].max() == 0.0 and gt[86, 86] == 1.0           # 100 * 224 / 256 = 87.5 -> 87 (exclusive)


def test_vggss_gt_is_binary_union():
    gt = metrics.gt_map_vggss([[0, 0, 0.5, 0.5], [0.25, 0.25, 0.75, 0.75], [-0.1, 0.9, 0.1, 1.2]])
    assert set(np.unique(gt)) == {0.0, 1.0}
    assert gt[0, 0] == 1 and gt[150, 150] == 1 and gt[168, 168] == 0
    assert gt[223, 0] == 1 and gt[223, 23] == 0                   # clipped to [0, 1], x224 truncated: 0.1 -> 22


def test_median_threshold_is_ezvsl_top_half():
    m = np.arange(16, dtype=float).reshape(4, 4) / 15
    p = metrics.binarize(m, "median")                             # sorted[16 // 2] = 8/15, compared with >=
    assert p.sum() == 8 and p[2, 0] == 1 and p[1, 3] == 0
    assert metrics.binarize(m, 0.6).sum() == 7                    # 9/15 .. 15/15 (seven values) >= 0.6


def test_ciou_median_left_half_vs_left_quarter():
    m = np.zeros((224, 224))
    m[:, :112] = 1.0                                               # sorted[N//2] is the first 1: P = left half
    gt = metrics.gt_map_vggss([[0, 0, 0.25, 1]])                   # left 56 columns
    # sum(P*G) = 56*224, sum(G) = 56*224, sum(P*[G==0]) = 56*224  ->  1/2
    assert metrics.ciou(m, gt, "median") == pytest.approx(0.5)


def test_ciou_on_consensus_map():
    gt = metrics.gt_map_flickr([[0, 0, 128, 128], [64, 64, 192, 192]])
    m = np.zeros((224, 224))
    m[:112, :112] = 1.0
    # P = the first annotator's box: 56^2 pixels at 1 and 112^2-56^2 at 0.5; no P outside G
    expected = (56 * 56 + 0.5 * (112 * 112 - 56 * 56)) / (0.5 * 112 * 112 * 2)
    assert metrics.ciou(m, gt, 0.6) == pytest.approx(expected) == pytest.approx(0.625)


def test_success_and_auc_by_hand():
    c50, auc = metrics.ciou50_auc([0.0, 0.5, 1.0])
    assert c50 == pytest.approx(2 / 3)
    # curve: 1 at t=0; 2/3 for t=0.05..0.5; 1/3 for t=0.55..1.0 (trapezoids over 0.05 steps)
    hand = (1 + 2 / 3) / 2 * 0.05 + 9 * 0.05 * 2 / 3 + (2 / 3 + 1 / 3) / 2 * 0.05 + 9 * 0.05 / 3
    assert auc == pytest.approx(hand) == pytest.approx(0.5166666, abs=1e-6)
    assert metrics.ciou50_auc([1.0, 1.0]) == (1.0, pytest.approx(1.0))


def test_pointing_game():
    gt = metrics.gt_map_vggss([[0.5, 0.5, 1.0, 1.0]])
    m = np.zeros((224, 224))
    m[200, 190] = 1.0
    assert metrics.pointing_hit(m, gt)
    m[10, 10] = 2.0
    assert not metrics.pointing_hit(m, gt)


def test_eval_map_resizes_and_normalises():
    m = metrics.eval_map(np.random.default_rng(0).random((7, 7)) * 5 + 3)
    assert m.shape == (224, 224) and m.min() == 0.0 and m.max() == pytest.approx(1.0)


def test_size_buckets():
    assert metrics.size_bucket(metrics.gt_map_vggss([[0, 0, 0.4, 0.4]])) == "small"
    assert metrics.size_bucket(metrics.gt_map_vggss([[0, 0, 0.6, 0.6]])) == "medium"
    assert metrics.size_bucket(metrics.gt_map_vggss([[0, 0, 0.8, 0.8]])) == "large"


def test_avsbench_miou_and_fscore_by_hand():
    mask = np.zeros((4, 4))
    mask[0, :4] = 1                                               # 4 target pixels
    pred = np.zeros((4, 4))
    pred[0, :2] = 1
    pred[3, :2] = 1                                               # 2 hits, 2 false positives
    assert metrics.mask_iou(pred, mask) == pytest.approx(2 / 6, abs=1e-6)
    empty = np.zeros((4, 4))
    assert metrics.mask_iou(empty, empty) == pytest.approx(1.0, abs=1e-6)   # AVSBench's no-object rule
    assert metrics.avsbench_miou([pred, empty], [mask, empty]) == pytest.approx((1 / 3 + 1) / 2, abs=1e-6)
    # threshold 0: P=R? prec 4/16, rec 1 -> F = 1.3*0.25/(0.075+1); thresholds > 0: prec = rec = 0.5 -> F = 0.5
    f = metrics.fscore_curve(pred, mask)
    assert f[0] == pytest.approx(1.3 * 0.25 / 1.075) and f[1:].max() == pytest.approx(0.5)
    assert metrics.fscore_curve(pred, empty) is None
    assert metrics.avsbench_fscore([pred, pred], [mask, empty]) == pytest.approx(0.5)   # empty mask skipped


def test_retrieval_recall_by_hand():
    v = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    a = np.array([[1.0, 0.1], [0.1, 1.0], [0.0, -1.0]])
    r = metrics.retrieval_recall(a, v)
    # audio 2 ties image 0 and image 2 (both cosine 0): a tie counts against the model
    assert r["a2i"]["r1"] == pytest.approx(2 / 3) and r["a2i"]["r5"] == 1.0
    assert r["i2a"]["r1"] == 1.0
    const = metrics.retrieval_recall(np.ones((12, 4)), np.ones((12, 4)))
    assert const["a2i"]["r1"] == 0.0 and const["a2i"]["r10"] == 0.0   # constant embeddings retrieve nothing
    by_class = metrics.retrieval_recall(a, v, labels=["x", "y", "x"])
    assert by_class["a2i"]["r1"] == 1.0                                # audio 2's first hit is image 0 (class x)


def test_retrieval_ranks_agree_with_recall_by_hand():
    v = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    a = np.array([[1.0, 0.1], [0.1, 1.0], [0.0, -1.0]])
    ranks = metrics.retrieval_ranks(a, v)
    assert ranks["a2i"].tolist() == [0, 0, 1] and ranks["i2a"].tolist() == [0, 0, 0]
    # audio 2 by class: images in score order 0 (x), 2 (x), 1 -> first hit at position 0
    assert metrics.retrieval_ranks(a, v, labels=["x", "y", "x"])["a2i"].tolist() == [0, 0, 0]
    assert metrics.recall_at(ranks, ks=(1, 2)) == {"a2i": {"r1": 2 / 3, "r2": 1.0, "n": 3},
                                                   "i2a": {"r1": 1.0, "r2": 1.0, "n": 3}}


def test_a_non_finite_embedding_is_a_miss_everywhere():
    rng = np.random.default_rng(0)
    a, v = rng.normal(size=(6, 4)), rng.normal(size=(6, 4))
    v[:] = a                                     # every pair would be found...
    a[2] = np.nan                                # ...but audio 2 diverged
    ranks = metrics.retrieval_ranks(a, v)
    assert ranks["a2i"][2] == 5 and ranks["i2a"][2] == 5            # last place in both directions
    assert [r for i, r in enumerate(ranks["a2i"]) if i != 2] == [0] * 5   # the others are unaffected
    assert metrics.recall_at(ranks)["a2i"]["r1"] == pytest.approx(5 / 6)
    assert metrics.retrieval_ranks(a, v, labels=list("xxyyzz"))["a2i"][2] == 5


def test_wilson_interval_closed_forms():
    lo, hi = metrics.wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(1.96 ** 2 / (10 + 1.96 ** 2))     # upper bound at zero hits
    lo, hi = metrics.wilson_interval(5, 10)
    assert lo + hi == pytest.approx(1.0) and lo == pytest.approx(0.2366, abs=1e-4)
    a, b = metrics.wilson_interval(3, 40), metrics.wilson_interval(37, 40)     # mirror images
    assert a[0] == pytest.approx(1 - b[1]) and a[1] == pytest.approx(1 - b[0])
    assert metrics.wilson_interval(30, 400)[1] - metrics.wilson_interval(30, 400)[0] < a[1] - a[0]   # more samples, narrower
    assert metrics.wilson_interval(0, 0) is None


def test_paired_bootstrap_separates_a_shift_from_noise():
    rng = np.random.default_rng(3)
    same = metrics.paired_bootstrap([1, 0, 1, 1], [1, 0, 1, 1])
    assert same["diff"] == same["lo"] == same["hi"] == 0.0 and same["p_le_0"] == 1.0
    base = rng.normal(size=400)
    better = metrics.paired_bootstrap(base + 0.3 + 0.1 * rng.normal(size=400), base)
    assert better["lo"] > 0.25 and better["hi"] < 0.35 and better["p_le_0"] == 0.0
    noise = metrics.paired_bootstrap(rng.normal(size=30), rng.normal(size=30))
    assert noise["lo"] < noise["diff"] < noise["hi"] and noise["lo"] < 0 < noise["hi"]
    # two hits out of 300 against five: the interval must straddle zero
    a, b = np.zeros(300), np.zeros(300)
    a[:2], b[100:105] = 1, 1
    few = metrics.paired_bootstrap(a, b)
    assert few["diff"] == pytest.approx(-3 / 300) and few["lo"] < 0 < few["hi"] + 1e-12
    with pytest.raises(ValueError):
        metrics.paired_bootstrap([], [])


def test_per_sample_auc_averages_to_the_auc():
    cious = np.random.default_rng(0).uniform(size=57)
    cious[:5] = [0.0, 1.0, 0.5, 0.05, 0.999]
    assert metrics.per_sample_auc(cious).mean() == pytest.approx(metrics.ciou50_auc(cious)[1], abs=1e-12)
    assert metrics.per_sample_auc([1.0])[0] == pytest.approx(1.0)        # success at every threshold
    assert metrics.per_sample_auc([0.0])[0] == pytest.approx(0.025)       # success at threshold 0 only: half a step


def test_false_alarm_detection_auroc():
    conf = [0.9, 0.2, 0.6, 0.4]
    ns = [True, True, False, False]
    assert metrics.false_alarm_rate(conf, ns) == 0.5
    assert metrics.detection_rate(conf, ns) == 0.5
    assert metrics.confidence_auroc(conf, ns) == 0.5
    assert metrics.false_alarm_rate(conf, [False] * 4) is None
    assert metrics.confidence_auroc([0.9, 0.1], [False, True]) == 1.0


# ---- multi-source ("pair") scenes ------------------------------------------------------------------
LEFT, RIGHT = [0.0, 0.0, 0.5, 1.0], [0.5, 0.0, 1.0, 1.0]          # disjoint halves of the frame


def _peak_at(x, y):
    m = np.zeros((224, 224))
    m[y, x] = 1.0
    return m


def test_follows_on_hand_made_maps():
    gts = [metrics.gt_map_vggss([LEFT]), metrics.gt_map_vggss([RIGHT])]    # one frame, two sounds
    groups = ["f1", "f1", "f2", "f2"]
    on_own = [_peak_at(30, 100), _peak_at(200, 100)]                      # each sound's peak on its object
    still = [_peak_at(30, 100), _peak_at(30, 100)]                        # a map that never moves
    hits = {name: [metrics.pointing_hit(m, g) for m, g in zip(maps, gts)] * 2
            for name, maps in (("own", on_own), ("still", still))}
    assert metrics.follows_by_group(groups, hits["own"]) == {"f1": True, "f2": True}
    assert metrics.follows_by_group(groups, hits["still"]) == {"f1": False, "f2": False}
    assert hits["still"] == [True, False] * 2                             # pointing alone still says 50 %
    # a constant peak can follow only where the sounding objects overlap: never for disjoint boxes
    assert metrics.static_follows_by_group(groups, gts * 2) == {"f1": False, "f2": False}
    overlap = [metrics.gt_map_vggss([[0, 0, 0.6, 1]]), metrics.gt_map_vggss([[0.4, 0, 1, 1]])]
    assert metrics.static_follows_by_group(["g", "g"], overlap) == {"g": True}
    # single scenes and scenes without a group test nothing
    assert metrics.follows_by_group(["a", None, "", "b", "b"], [True] * 5) == {"b": True}


def test_follows_chance_is_what_random_peaks_score():
    areas = [0.5, 0.25, 0.2, 0.1, 0.3]
    chance = metrics.follows_chance_by_group(["a", "a", "b", "b", "b"], areas)
    assert chance == {"a": pytest.approx(0.125), "b": pytest.approx(0.2 * 0.1 * 0.3)}
    # uniform random peaks over two boxes covering 1/2 and 1/4 of the frame follow 1/8 of the time
    gts = [metrics.gt_map_vggss([LEFT]), metrics.gt_map_vggss([[0.5, 0, 1, 0.5]])]
    assert [float((g > 0).mean()) for g in gts] == [0.5, 0.25]
    rng = np.random.default_rng(0)
    frames = 4000
    groups = np.repeat(np.arange(frames), 2).tolist()
    hits = [metrics.pointing_hit(_peak_at(*rng.integers(0, 224, 2)), gts[i % 2]) for i in range(2 * frames)]
    follows = np.mean(list(metrics.follows_by_group(groups, hits).values()))
    expected = np.mean(list(metrics.follows_chance_by_group(groups, [0.5, 0.25] * frames).values()))
    assert expected == pytest.approx(0.125) and abs(follows - expected) < 0.02


def test_wrong_object_hit():
    gt = metrics.gt_map_vggss([LEFT])
    other = [[0.6, 0.0, 1.0, 0.5]]
    assert metrics.wrong_object_hit(_peak_at(200, 50), gt, other)           # on the other candidate
    assert not metrics.wrong_object_hit(_peak_at(200, 200), gt, other)      # on nothing
    assert not metrics.wrong_object_hit(_peak_at(50, 50), gt, other)        # on the sounding object
    assert not metrics.wrong_object_hit(_peak_at(50, 50), gt, [[0, 0, 1, 1]])   # ...even where they overlap
    assert not metrics.wrong_object_hit(_peak_at(200, 50), gt, [])          # no other candidate
    assert metrics.peak(_peak_at(200, 50)) == (50, 200)
