"""SSH box machinery on hand-computed cases: anchors, encode/decode, IoU, labels, OHEM and random
sampling, the loss, padded batches, NMS, scales and the pyramid."""

import math

import pytest
import torch

from bench.faces.anchors import (
    base_anchors,
    box_iou_plus1,
    cells_inside,
    clip_boxes,
    decode,
    encode,
    flatten_outputs,
    grid_anchors,
    module_anchors,
)
from bench.faces.config import MODULES
from bench.faces.inference import (
    detect,
    detect_pyramid,
    detect_single,
    fddb_pascal_scale,
    merge_and_nms,
    pyramid_scales,
    single_scale,
)
from bench.faces.targets import (
    anchors_inside,
    label_anchors,
    ohem_sample,
    random_sample,
    smooth_l1,
    ssh_loss,
)

T = torch.tensor


# ---------------------------------------------------------------- anchors


def test_base_anchors_follow_generate_anchors():
    assert torch.equal(base_anchors((16, 32)), T([[0.0, 0, 15, 15], [-8, -8, 23, 23]]))
    assert torch.equal(base_anchors((64, 128)), T([[-24.0, -24, 39, 39], [-56, -56, 71, 71]]))
    assert torch.equal(base_anchors((512,)), T([[-248.0, -248, 263, 263]]))


def test_grid_anchors_order_is_y_x_a():
    a = grid_anchors(2, 3, 8, (16, 32))
    assert a.shape == (12, 4)
    assert torch.equal(a[0], T([0.0, 0, 15, 15]))
    assert torch.equal(a[1], T([-8.0, -8, 23, 23]))
    assert torch.equal(a[2], T([8.0, 0, 23, 15]))      # y 0, x 1, a 0
    assert torch.equal(a[6], T([0.0, 8, 15, 23]))      # y 1, x 0, a 0
    assert torch.equal(a[11], T([8.0, 0, 39, 31]))     # y 1, x 2, a 1


def test_flatten_outputs_matches_anchor_order():
    b, a, h, w = 2, 2, 3, 4
    # value = 1000 b + 100 a + 10 c + (y w + x): every entry names where it came from
    cls = torch.zeros(b, a, 2, h, w)
    reg = torch.zeros(b, a, 4, h, w)
    for bi in range(b):
        for ai in range(a):
            for y in range(h):
                for x in range(w):
                    for c in range(2):
                        cls[bi, ai, c, y, x] = 1000 * bi + 100 * ai + 10 * c + y * w + x
                    for c in range(4):
                        reg[bi, ai, c, y, x] = 1000 * bi + 100 * ai + 10 * c + y * w + x
    scores, deltas = flatten_outputs(cls.reshape(b, a * 2, h, w), reg.reshape(b, a * 4, h, w))
    assert scores.shape == (b, h * w * a, 2) and deltas.shape == (b, h * w * a, 4)
    # anchor (y 2, x 1, a 1) of image 1 is row (2 * 4 + 1) * 2 + 1 = 19
    assert scores[1, 19].tolist() == [1000 + 100 + 9, 1000 + 100 + 10 + 9]
    assert deltas[1, 19].tolist() == [1109, 1119, 1129, 1139]
    assert scores[0, 0].tolist() == [0, 10]


def test_module_anchors_use_map_size_and_stride():
    outputs = {"M2": (torch.zeros(1, 4, 2, 3), torch.zeros(1, 8, 2, 3))}
    anchors = module_anchors(outputs, MODULES)["M2"]
    assert anchors.shape == (12, 4)
    assert torch.equal(anchors[-1], T([-56.0 + 32, -56 + 16, 71 + 32, 71 + 16]))


def test_cells_inside_drops_padding_cells():
    a = grid_anchors(3, 3, 8, (16, 32))
    inside = cells_inside(a, (10, 17)).reshape(3, 3, 2)
    # cell origins 0, 8, 16: y < 10 keeps rows 0-1, x < 17 keeps all three columns
    assert inside[:2].all() and not inside[2].any()
    assert cells_inside(a, (24, 24)).all()


# ---------------------------------------------------------------- encode / decode / IoU


def test_encode_hand_values():
    # anchor: w 16, centre 8; gt [4, 2, 35, 33]: w 32, centre (20, 18)
    d = encode(T([[0.0, 0, 15, 15]]), T([[4.0, 2, 35, 33]]))
    assert torch.allclose(d, T([[0.75, 0.625, math.log(2), math.log(2)]]))


def test_decode_hand_values_have_no_minus_one():
    box = decode(T([[0.0, 0, 15, 15]]), T([[0.75, 0.625, math.log(2), math.log(2)]]))
    assert torch.allclose(box, T([[4.0, 2, 36, 34]]))
    assert torch.allclose(decode(T([[0.0, 0, 15, 15]]), torch.zeros(1, 4)), T([[0.0, 0, 16, 16]]))


def test_decode_of_encode_is_gt_plus_one_at_x2_y2():
    g = torch.Generator().manual_seed(0)
    anchors = grid_anchors(4, 4, 16, (16, 64))
    xy = torch.rand(anchors.shape[0], 2, generator=g) * 100
    gt = torch.cat([xy, xy + torch.rand(anchors.shape[0], 2, generator=g) * 80 + 5], dim=1)
    back = decode(anchors, encode(anchors, gt))
    assert torch.allclose(back, gt + T([0.0, 0, 1, 1]), atol=1e-4)


def test_clip_boxes_to_last_pixel():
    boxes = T([[-5.0, -3, 120, 50], [10, 12, 20, 30]])
    assert torch.equal(clip_boxes(boxes, 40, 100), T([[0.0, 0, 99, 39], [10, 12, 20, 30]]))


def test_iou_uses_plus_one_areas():
    a = T([[0.0, 0, 9, 9]])
    b = T([[5.0, 0, 14, 9], [10, 0, 19, 9], [9, 0, 18, 9], [0, 0, 9, 9]])
    # 50 / 150; disjoint; one shared column: 10 / 190; identical
    assert torch.allclose(box_iou_plus1(a, b), T([[1 / 3, 0.0, 10 / 190, 1.0]]))


# ---------------------------------------------------------------- labels


def test_label_thresholds():
    anchor = T([[0.0, 0, 9, 9]])                         # area 100
    # gt [0, 0, 9, r] lies inside the anchor: IoU = (r + 1) / 10, computed exactly
    cases = {0: 0, 1: 0, 2: -1, 3: -1, 4: 1, 5: 1}      # 0.3 is ignored, 0.5 is positive
    for r, want in cases.items():
        labels, matched = label_anchors(anchor, T([[0.0, 0, 9, float(r)]]))
        assert labels.item() == want, r
        assert matched.item() == 0


def test_no_forced_positive_and_best_gt_index():
    anchors = T([[0.0, 0, 9, 9], [100, 100, 109, 109], [50, 50, 65, 65]])
    gt = T([[0.0, 0, 9, 3], [50, 50, 65, 65]])           # IoU 0.4 with anchor 0; anchor 2 exact
    labels, matched = label_anchors(anchors, gt)
    assert labels.tolist() == [-1, 0, 1]
    assert matched.tolist() == [0, 0, 1]
    labels, matched = label_anchors(anchors, torch.zeros(0, 4))
    assert labels.tolist() == [0, 0, 0] and matched.tolist() == [-1, -1, -1]


def test_invalid_anchors_are_ignored():
    anchors = T([[0.0, 0, 9, 9], [0, 0, 9, 9]])
    labels, _ = label_anchors(anchors, T([[0.0, 0, 9, 9]]), valid=T([True, False]))
    assert labels.tolist() == [1, -1]


def test_anchors_inside_border():
    a = T([[0.0, 0, 15, 15], [-1, 0, 14, 15], [5, 5, 20, 19], [4, 4, 19, 19]])
    assert anchors_inside(a, (20, 20)).tolist() == [True, False, False, True]
    assert anchors_inside(a, (20, 20), allowed_border=1).tolist() == [True, True, True, True]


# ---------------------------------------------------------------- sampling


def _hand_case() -> tuple[torch.Tensor, torch.Tensor, set[int], set[int]]:
    """70 positives (64 hard at 0.1, 6 easy at 0.9) and 300 negatives (192 hard at 0.8, 108 easy
    at 0.2), interleaved, plus 30 ignored anchors scored 0.5."""
    n = 400
    labels = torch.full((n,), -1)
    scores = torch.full((n,), 0.5)
    pos = list(range(0, 350, 5))                        # 70
    neg = [i for i in range(n) if i not in set(pos)][:300]
    easy_pos = set(pos[3::12][:6])
    hard_neg = set(neg[::3][:100]) | set(neg[1::3][:92])
    for i in pos:
        labels[i] = 1
        scores[i] = 0.9 if i in easy_pos else 0.1
    for i in neg:
        labels[i] = 0
        scores[i] = 0.8 if i in hard_neg else 0.2
    return labels, scores, set(pos) - easy_pos, hard_neg


def test_ohem_keeps_exactly_the_hardest():
    labels, scores, hard_pos, hard_neg = _hand_case()
    assert len(hard_pos) == 64 and len(hard_neg) == 192
    out = ohem_sample(labels, scores)
    assert set((out == 1).nonzero().squeeze(1).tolist()) == hard_pos
    assert set((out == 0).nonzero().squeeze(1).tolist()) == hard_neg
    assert (out[labels == -1] == -1).all()


def test_ohem_small_batches():
    labels = T([1, 1, 0, 0, 0, -1])
    scores = T([0.9, 0.1, 0.3, 0.7, 0.5, 0.99])
    # room for everything: nothing changes
    assert ohem_sample(labels, scores, batch=8).tolist() == labels.tolist()
    # 2 positive slots, the 2 remaining go to the highest-scored negatives
    assert ohem_sample(labels, scores, batch=4, fg_fraction=0.5).tolist() == [1, 1, -1, 0, 0, -1]
    # 1 positive slot: the lower-scored positive; 3 negative slots: all negatives
    assert ohem_sample(labels, scores, batch=4).tolist() == [-1, 1, 0, 0, 0, -1]


def test_random_sampling_counts_and_seed():
    labels = torch.full((2000,), -1)
    labels[:100] = 1
    labels[100:1100] = 0
    a = random_sample(labels, torch.Generator().manual_seed(0))
    b = random_sample(labels, torch.Generator().manual_seed(0))
    c = random_sample(labels, torch.Generator().manual_seed(1))
    assert (a == 1).sum() == 64 and (a == 0).sum() == 192
    assert (a[:100] != 0).all() and (a[100:1100] != 1).all() and (a[1100:] == -1).all()
    assert torch.equal(a, b) and not torch.equal(a, c)
    few = labels.clone()
    few[10:100] = -1                                     # 10 positives: all kept, 246 negatives
    d = random_sample(few, torch.Generator().manual_seed(0))
    assert (d == 1).sum() == 10 and (d == 0).sum() == 246


# ---------------------------------------------------------------- loss


def test_smooth_l1_sigma_3():
    x = T([0.1, -0.5, 0.2, 0.0, 1 / 9])
    want = T([4.5 * 0.01, 0.5 - 1 / 18, 0.2 - 1 / 18, 0.0, 1 / 9 - 1 / 18])
    assert torch.allclose(smooth_l1(x), want)


def _one_module(cls_rows: list[list[float]], reg_rows: list[list[float]]
                ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """One M2-like module with one anchor per cell on a 1 x n map from per-image rows."""
    b, n = len(cls_rows), len(cls_rows[0]) // 2
    cls = T(cls_rows).reshape(b, n, 2).permute(0, 2, 1).reshape(b, 2, 1, n)
    reg = T(reg_rows).reshape(b, n, 4).permute(0, 2, 1).reshape(b, 4, 1, n)
    return {"M2": (cls.requires_grad_(), reg.requires_grad_())}


SPEC = {"M2": (16, (16,))}


@pytest.mark.parametrize("ohem", [True, False])
def test_loss_hand_case(ohem: bool):
    # anchors [0,0,15,15] and [16,0,31,15]; gt [1,0,16,15]: IoU 240/272 and 16/496
    outputs = _one_module([[0.0, 1.0, 2.0, 0.0]], [[0.1, -0.5, 0.2, 0.0, 5, 5, 5, 5]])
    anchors = module_anchors(outputs, SPEC)
    total, parts = ssh_loss(outputs, anchors, [T([[1.0, 0, 16, 15]])], [(16, 32)], ohem,
                            [torch.Generator().manual_seed(0)])
    ce = (math.log(1 + math.exp(-1)) + math.log(1 + math.exp(-2))) / 2
    # target dx = (9 - 8) / 16; residuals 0.0375, -0.5, 0.2, 0 through smooth L1 (sigma 3)
    box = (4.5 * 0.0375**2 + (0.5 - 1 / 18) + (0.2 - 1 / 18)) / 2
    assert parts["M2/cls"].item() == pytest.approx(ce, rel=1e-5)
    assert parts["M2/box"].item() == pytest.approx(box, rel=1e-5)
    assert total.item() == pytest.approx(ce + box, rel=1e-5)
    total.backward()
    assert outputs["M2"][1].grad[0, :, 0, 1].abs().sum() == 0   # the negative's deltas: no loss


def test_padded_batch_ignores_cells_beyond_each_image():
    # 1 x 3 map (anchors at x 0, 16, 32); image 0 is 16 x 48, image 1 only 16 x 32 wide.
    # Image 1's third anchor is padding: scored as a sure face it would cost ~100 if counted.
    cls = [[0.0] * 6, [0.0, 0.0, 0.0, 0.0, 0.0, 100.0]]
    reg = [[0.1, -0.5, 0.2, 0.0] + [0.0] * 8, [0.0] * 12]
    gts = [T([[0.0, 0, 15, 15]]), torch.zeros(0, 4)]
    for border in (0.0, math.inf):
        outputs = _one_module(cls, reg)
        total, parts = ssh_loss(outputs, module_anchors(outputs, SPEC), gts, [(16, 48), (16, 32)],
                                ohem=True, allowed_border=border)
        box = (4.5 * 0.01 + (0.5 - 1 / 18) + (0.2 - 1 / 18)) / 3 / 2   # image 0 only, 3 sampled
        assert parts["M2/cls"].item() == pytest.approx(math.log(2), rel=1e-5)
        assert parts["M2/box"].item() == pytest.approx(box, rel=1e-5)
        assert total.item() == pytest.approx(math.log(2) + box, rel=1e-5)


def test_random_sampling_needs_a_generator():
    outputs = _one_module([[0.0, 0.0]], [[0.0] * 4])
    with pytest.raises(ValueError, match="Generator"):
        ssh_loss(outputs, module_anchors(outputs, SPEC), [torch.zeros(0, 4)], [(16, 16)], False)


# ---------------------------------------------------------------- inference


def test_nms_uses_plus_one_areas_and_keeps_exact_ties():
    # +1 IoU 50/150 > 0.3 (without +1: 36/126 = 0.286, which would be kept)
    dets = T([[0.0, 0, 9, 9, 0.9], [5, 0, 14, 9, 0.8]])
    assert merge_and_nms([dets]).tolist() == [[0.0, 0, 9, 9, pytest.approx(0.9)]]
    # +1 IoU exactly 0.3 (30 / 100) is not suppressed
    tie = T([[0.0, 0, 9, 9, 0.9], [0, 0, 9, 2, 0.8]])
    assert merge_and_nms([tie]).shape[0] == 2


def test_merge_thresholds_scores_and_merges_sets_before_nms():
    a = T([[0.0, 0, 9, 9, 0.5], [50, 50, 60, 60, 0.05]])
    b = T([[1.0, 1, 10, 10, 0.7], [100, 100, 110, 110, 0.06]])
    out = merge_and_nms([a, b])
    # a's first box is suppressed by b's; the 0.05 score is dropped (strictly greater kept)
    assert out[:, 4].tolist() == pytest.approx([0.7, 0.06])
    assert out[0, :4].tolist() == [1.0, 1, 10, 10]


def test_detect_decodes_clips_scales_and_keeps_top():
    spec = {"M2": (16, (64,))}
    cls = torch.zeros(1, 2, 2, 2)
    cls[0, 1] = T([[-5.0, -4], [-3, 2]])                 # face logits; bg 0
    reg = torch.zeros(1, 4, 2, 2)
    reg[0, :, 1, 1] = T([0.25, 0.0, 0.0, math.log(0.5)])
    dets = detect({"M2": (cls, reg)}, spec, (32, 32), 2.0, pre_nms_top=2)
    assert dets.shape == (2, 5)
    # cell (1, 1): anchor [-8,-8,55,55] -> [8, 8, 72, 40] -> clipped [8, 8, 31, 31] -> / 2
    assert torch.allclose(dets[0], T([4.0, 4, 15.5, 15.5, 1 / (1 + math.exp(-2))]))
    # cell (1, 0): anchor [-24,-8,39,55] + 1 at x2, y2, clipped, / 2
    assert torch.allclose(dets[1], T([0.0, 0, 15.5, 15.5, 1 / (1 + math.exp(3))]))
    kept = merge_and_nms([dets], nms_thresh=0.99)
    assert kept.shape[0] == 1                             # 0.047 <= 0.05 dropped
    # padding: a 16 x 32 image uses only the first row of cells
    padded = detect({"M2": (cls, reg)}, spec, (16, 32), 1.0)
    assert padded[:, 4].tolist() == pytest.approx([1 / (1 + math.exp(4)), 1 / (1 + math.exp(5))])


def test_scales():
    assert single_scale(600, 1000) == pytest.approx(1.6)         # 1200 -> 2000 > 1600
    assert single_scale(1000, 600) == pytest.approx(1.6)
    assert single_scale(900, 1000) == pytest.approx(1200 / 900)
    assert fddb_pascal_scale(600, 1000) == pytest.approx(400 / 600)
    assert fddb_pascal_scale(300, 1000) == pytest.approx(0.8)    # 400 / 300 -> 1333 > 800
    assert pyramid_scales(600, 1000) == pytest.approx([0.75, 1.2, 1.8, 2.4])  # base 1.2
    assert pyramid_scales(800, 1000) == pytest.approx([0.625, 1.0, 1.5, 2.0])  # base 1.0
    # a smaller base moves the whole pyramid; the factors stay {500, 800, 1200, 1600} / 800
    assert pyramid_scales(480, 640, 240, 400) == pytest.approx([0.3125, 0.5, 0.75, 1.0])


class FakeSSH:
    """Stands in for the network: records each call and scores one anchor per level.

    The level's anchor has large dw, dh, so its box clips to the whole input and, divided by the
    scale, covers about the whole original image on every level; each level's score is known.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[int, int], set[str]]] = []

    def __call__(self, image: torch.Tensor, modules: set[str]):
        h, w = image.shape[-2:]
        self.calls.append(((h, w), set(modules)))
        out = {}
        for name in modules:
            stride, sizes = MODULES[name]
            a, fh, fw = len(sizes), -(-h // stride), -(-w // stride)
            cls = torch.zeros(1, a, 2, fh, fw)
            cls[:, :, 0] = 10.0                           # background everywhere
            reg = torch.zeros(1, a, 4, fh, fw)
            if name == "M2":
                cls[0, 0, :, 0, 0] = T([0.0, h / 1000])   # face score rises with the level
                reg[0, 0, 2:, 0, 0] = 5.0
            out[name] = (cls.reshape(1, a * 2, fh, fw), reg.reshape(1, a * 4, fh, fw))
        return out


def test_pyramid_skips_m3_on_largest_level_and_merges_before_nms():
    fake = FakeSSH()
    dets = detect_pyramid(fake, torch.zeros(3, 300, 500), MODULES)
    # base scale 2.4 (800 / 300 would make 1333 > 1200), levels x 500/800 .. 1600/800
    assert [size for size, _ in fake.calls] == [(450, 750), (720, 1200), (1080, 1800),
                                                 (1440, 2400)]
    assert [mods for _, mods in fake.calls] == [{"M1", "M2", "M3"}] * 3 + [{"M1", "M2"}]
    # one box per level, all over the whole image: one NMS over the levels leaves the best
    assert dets.shape == (1, 5)
    assert dets[0, 4].item() == pytest.approx(1 / (1 + math.exp(-1.44)), rel=1e-5)
    assert torch.allclose(dets[0, :4], T([0.0, 0, 2399 / 4.8, 1439 / 4.8]), atol=1e-3)


def test_single_scale_keeps_m3():
    fake = FakeSSH()
    dets = detect_single(fake, torch.zeros(3, 300, 500), MODULES, short=400, long=800)
    assert fake.calls == [((400, 667), {"M1", "M2", "M3"})]
    assert dets.shape == (1, 5)


def test_published_border_per_module():
    from bench.faces.config import M2_ONLY, MODULES
    from bench.faces.targets import border_for

    assert border_for(MODULES) == {"M1": 0.0, "M2": 0.0, "M3": 512.0}  # SSH's train prototxt
    assert border_for(M2_ONLY) == {"M2": 512.0}
