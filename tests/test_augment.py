"""SSD's training augmentation: boxes stay on their objects, empty images survive, seeding."""

import torch

from almdn.data.augment import AugmentConfig, AugmentedDataset, augment, build_transform


def _solid_rectangle(h=96, w=128, box=(30, 20, 70, 60)):
    """A black image with one white rectangle, and its exact box."""
    image = torch.zeros(3, h, w)
    x1, y1, x2, y2 = box
    image[:, y1:y2, x1:x2] = 1.0
    return image, {"boxes": torch.tensor([box], dtype=torch.float32), "labels": torch.tensor([3]), "image_id": 7}


def _white_extent(image: torch.Tensor) -> tuple[float, float, float, float] | None:
    # photometric distortion changes the colours: the rectangle is where the image differs from the
    # background colour of the (augmented) image's corner-most pixels, found by thresholding brightness
    mask = image.mean(0) > 0.5 * image.mean(0).max()
    ys, xs = mask.nonzero(as_tuple=True)
    if len(xs) == 0:
        return None
    return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)


def test_every_transform_keeps_the_box_on_its_object():
    config = AugmentConfig(policy="ssd", zoom_out_max=3.0, zoom_out_p=0.5, fill=(0.0, 0.0, 0.0))
    transform = build_transform(config)
    image, target = _solid_rectangle()
    checked = 0
    for seed in range(60):
        torch.manual_seed(seed)
        out_image, out_target = augment(image, target, transform)
        assert out_image.shape[0] == 3
        if len(out_target["boxes"]) == 0:
            continue  # the crop cut the rectangle away, and its box went with it
        assert out_target["labels"].tolist() == [3]
        extent = _white_extent(out_image)
        assert extent is not None
        torch.testing.assert_close(out_target["boxes"][0], torch.tensor(extent), atol=1.01, rtol=0)
        checked += 1
    assert checked >= 40


def test_horizontal_flip_mirrors_the_box_and_can_be_switched_off():
    image, target = _solid_rectangle()
    flip = build_transform(AugmentConfig(policy="flip"))
    flipped = set()
    for seed in range(20):
        torch.manual_seed(seed)
        _, out = augment(image, target, flip)
        flipped.add(tuple(out["boxes"][0].tolist()))
    assert flipped == {(30.0, 20.0, 70.0, 60.0), (128 - 70.0, 20.0, 128 - 30.0, 60.0)}
    assert build_transform(AugmentConfig(policy="flip", hflip=False)) is None
    assert build_transform(AugmentConfig(policy="none")) is None


def test_auto_is_ssd_for_ssd_and_flip_only_for_two_stage_detectors():
    assert AugmentConfig().resolve(two_stage=False) == "ssd"
    assert AugmentConfig().resolve(two_stage=True) == "flip"
    names = [type(t).__name__ for t in build_transform(AugmentConfig(), two_stage=True).transforms]
    assert names == ["RandomHorizontalFlip", "SanitizeBoundingBoxes"]


def test_an_image_without_boxes_survives_every_transform():
    transform = build_transform(AugmentConfig(policy="ssd"))
    image = torch.rand(3, 64, 80)
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long), "image_id": 1}
    for seed in range(10):
        torch.manual_seed(seed)
        out_image, out = augment(image, empty, transform)
        assert out["boxes"].shape == (0, 4) and out["labels"].numel() == 0
        assert out_image.dim() == 3 and out_image.shape[0] == 3


class _One(torch.utils.data.Dataset):
    def __len__(self):
        return 1

    def __getitem__(self, index):
        return _solid_rectangle()


def test_a_sample_s_augmentation_depends_only_on_seed_and_position_not_on_the_global_stream():
    data = AugmentedDataset(_One(), build_transform(AugmentConfig(policy="ssd")), seed=5)
    torch.manual_seed(0)
    a = data[(0, 17)]
    state = torch.get_rng_state()
    torch.manual_seed(999)
    b = data[(0, 17)]
    torch.testing.assert_close(a[0], b[0])
    torch.testing.assert_close(a[1]["boxes"], b[1]["boxes"])
    torch.manual_seed(0)
    data[(0, 17)]
    assert torch.equal(torch.get_rng_state(), state), "augmenting must not consume the global random stream"
    c = data[(0, 18)]
    assert not torch.equal(a[0], c[0]) or not torch.equal(a[1]["boxes"], c[1]["boxes"])
    assert torch.equal(data[0][0], _solid_rectangle()[0])  # a plain index is the sample unchanged


def test_fast_iou_crop_equals_torchvision_s_sample_by_sample_and_draws_the_same_numbers(tiny_demo):
    """FastIoUCrop is a faster v2.RandomIoUCrop, not another augmentation: the same crop, the same
    boxes and labels, and the same random state after it, on the demo's small objects (where most
    trials fail), on empty images and on zoomed-out canvases."""
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    from almdn.data.augment import FastIoUCrop
    from almdn.data.coco import CocoDetectionDataset

    ds = CocoDetectionDataset(tiny_demo["train_annotations"])
    zoom = v2.RandomZoomOut(fill={tv_tensors.Image: [0.5, 0.5, 0.5], "others": 0}, side_range=(1.0, 2.0), p=0.5)
    reference, fast = v2.RandomIoUCrop(), FastIoUCrop()
    samples = [ds[i] for i in range(len(ds))] + [_solid_rectangle(), (torch.rand(3, 40, 50), {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)})]
    cropped = 0
    for i, (image, target) in enumerate(samples):
        for repeat in range(4):
            torch.manual_seed(1000 * i + repeat)
            boxes = tv_tensors.BoundingBoxes(target["boxes"], format="XYXY", canvas_size=tuple(image.shape[-2:]))
            x, y = zoom(tv_tensors.Image(image), {**target, "boxes": boxes})
            state = torch.get_rng_state()
            a_image, a_target = reference(x, y)
            a_next = torch.rand(4)
            torch.set_rng_state(state)
            b_image, b_target = fast(x, y)
            assert torch.equal(a_image, b_image) and torch.equal(a_target["boxes"], b_target["boxes"]), (i, repeat)
            assert torch.equal(a_target["labels"], b_target["labels"]) and torch.equal(a_next, torch.rand(4)), (i, repeat)
            cropped += a_image.shape != x.shape
    assert cropped > 20  # the crops were taken, not only the leave-as-is option


def test_the_ssd_recipe_uses_the_fast_iou_crop():
    from almdn.data.augment import FastIoUCrop

    transform = build_transform(AugmentConfig(policy="ssd"))
    assert any(isinstance(t, FastIoUCrop) for t in transform.transforms)
