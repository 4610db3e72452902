"""A tiny 3-client federation and a protocol-step driver shared by the training tests."""

import torch

from fedml_prr.data.federation import ClientData, Federation, ImageSplit

TINY = {
    "train_args": {"comm_round": 2, "epochs": 2, "batch_size": 8, "learning_rate": 0.05},
    "prr_args": {"prr_image_size": 32, "prr_model_options": {"width": 0.25}, "prr_cpa_init_rounds": 1,
                 "prr_eval_batch_size": 64},
}


def split(n, gen, classes=(0, 1, 2)):
    labels = torch.tensor([classes[i % len(classes)] for i in range(n)], dtype=torch.int64)
    images = torch.randint(0, 196, (n, 3, 32, 32), generator=gen, dtype=torch.uint8)
    images[torch.arange(n), labels] += 60  # class signal: the label's colour channel is brighter
    return ImageSplit(images, labels)


def tiny_federation(missing_class_client=None):
    gen = torch.Generator().manual_seed(0)
    clients = []
    for i, name in enumerate(["A", "B", "C"]):
        classes = (0, 1) if i == missing_class_client else (0, 1, 2)
        clients.append(ClientData(name, split(24 + 4 * i, gen, classes), split(9, gen), split(9, gen)))
    return Federation("tiny", ("nv", "bkl", "mel"), tuple(clients))


def collect_uploads(parties):
    """Deliver the server's messages, train every silo one step; the uploads by silo, not yet aggregated."""
    parties.deliver()
    return parties.train()


def drive_one_step(parties):
    """One whole protocol step of a :class:`~fedml_prr.runtime.sp.LocalFederation`; the uploads by silo."""
    return parties.step()


def write_image_folder(root, federation):
    """``federation`` as the ``image_folder`` layout (PNG files) under ``root``."""
    from pathlib import Path

    from PIL import Image

    root = Path(root)
    for client in federation.clients:
        for split_name in ("train", "valid", "test"):
            split_data = getattr(client, split_name)
            for i, (image, label) in enumerate(zip(split_data.images, split_data.labels)):
                folder = root / client.name / split_name / federation.class_names[int(label)]
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{i:03d}.png")
    return root
