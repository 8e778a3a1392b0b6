"""Draw a trained model's detections with their mixture components, for the README.

Usage: python scripts/readme_figure.py CHECKPOINT DATASET_DIR OUT.png
Each detection: its box (white), every component's mean box (orange, opacity = its weight),
and its four uncertainties (box aleatoric/epistemic, class aleatoric/epistemic).
"""

import sys

import torch
from PIL import Image, ImageDraw

from almdn.data.coco import CocoDetectionDataset
from almdn.engine.checkpoint import load_model


def main(checkpoint: str, data: str, out: str, n: int = 6, scale: int = 3) -> None:
    model = load_model(checkpoint)
    ds = CocoDetectionDataset(f"{data}/annotations/test.json", class_names=model.class_names)
    tiles = []
    with torch.no_grad():
        for i in range(n):
            image, _ = ds[i]
            det = model([image])[0]
            keep = det["scores"] >= 0.5
            pil = Image.fromarray((image.permute(1, 2, 0).numpy() * 255).astype("uint8")).resize((128 * scale, 128 * scale), Image.NEAREST)
            draw = ImageDraw.Draw(pil, "RGBA")
            for j in keep.nonzero().flatten().tolist():
                for comp, w in zip(det["component_boxes"][j], det["component_weights"][j].mean(-1)):
                    draw.rectangle((comp * scale).tolist(), outline=(255, 150, 0, int(255 * float(w))), width=2)
                box = (det["boxes"][j] * scale).tolist()
                draw.rectangle(box, outline=(255, 255, 255, 255), width=2)
                label = model.class_names[int(det["labels"][j]) - 1]
                text = f"{label} {det['scores'][j]:.2f}\nbox {det['loc_aleatoric'][j]:.2f}/{det['loc_epistemic'][j]:.3f}\ncls {det['cls_aleatoric'][j]:.2f}/{det['cls_epistemic'][j]:.3f}"
                draw.multiline_text((box[0] + 2, box[3] + 2), text, fill=(255, 255, 0, 255))
            tiles.append(pil)
    sheet = Image.new("RGB", (len(tiles) * 128 * scale, 128 * scale))
    for k, tile in enumerate(tiles):
        sheet.paste(tile, (k * 128 * scale, 0))
    sheet.save(out, optimize=True)


if __name__ == "__main__":
    main(*sys.argv[1:4])
