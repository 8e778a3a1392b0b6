"""One registry of architectures and heads: every layer offers exactly what the library builds."""

from __future__ import annotations

from almdn import registry


def test_the_registry_names_what_the_builders_build():
    from almdn.models import ARCH_NAMES, ARCHITECTURES, FRCNN_ARCHITECTURES, HEAD_TYPES

    assert set(registry.SSD_ARCHITECTURES) == set(ARCHITECTURES)
    assert set(registry.FRCNN_ARCHITECTURES) == set(FRCNN_ARCHITECTURES)
    assert ARCH_NAMES == registry.ARCH_NAMES == (*registry.SSD_ARCHITECTURES, *registry.FRCNN_ARCHITECTURES)
    assert HEAD_TYPES == registry.HEAD_TYPES
    assert set(registry.MIXTURE_HEAD_TYPES) < set(registry.HEAD_TYPES)
    assert all(registry.ARCHITECTURES[name] for name in registry.ARCH_NAMES)  # a line on each


def test_the_cli_offers_every_architecture_and_head():
    import click

    from almdn.cli import main

    train = main.commands["train"]
    choices = {p.name: p.type.choices for p in train.params if isinstance(p.type, click.Choice)}
    assert tuple(choices["arch"]) == registry.ARCH_NAMES
    assert tuple(choices["head"]) == registry.HEAD_TYPES


def test_rounds_and_the_app_offer_the_registry_s_round_choices():
    from almdn.rounds import RoundSettings

    assert "ssdlite320_mobilenet_v3_large" in registry.ROUND_ARCH_NAMES
    assert set(registry.ROUND_ARCH_NAMES) <= set(registry.SSD_ARCHITECTURES)
    assert RoundSettings().arch == registry.ROUND_ARCH_NAMES[0]
    for arch in registry.ROUND_ARCH_NAMES:
        RoundSettings(arch=arch).check()
    for head in registry.ROUND_HEAD_TYPES:
        RoundSettings(head=head).check()
