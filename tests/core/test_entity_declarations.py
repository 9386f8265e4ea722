"""What a new entity must declare is checked where it is declared, not found missing at run time."""

from __future__ import annotations

from masivo_braze_sync.accounts import TOGGLE_PREFIX
from masivo_braze_sync.db.models import SOURCE_TABLES, BrazeIntegration
from masivo_braze_sync.entities import ENTITIES
from masivo_braze_sync.entities.base import Entity


def test_every_toggle_an_entity_reads_is_a_column_the_accounts_are_read_with() -> None:
    columns = set(BrazeIntegration.__table__.c.keys())  # type: ignore[attr-defined]
    for entity in ENTITIES.values():
        for toggle in entity.toggles:
            assert toggle in columns, (entity.name, toggle)
            assert toggle.startswith(TOGGLE_PREFIX), (entity.name, toggle)


def test_every_captured_table_is_a_source_table() -> None:
    sources = {t.name for t in SOURCE_TABLES}
    for entity in ENTITIES.values():
        assert entity.captured, entity.name
        assert set(entity.captured) <= sources, entity.name


def test_every_entity_sets_the_required_attributes_and_methods() -> None:
    for entity in ENTITIES.values():
        for attr in ("name", "captured", "toggle", "extract_sql"):
            assert getattr(entity, attr, None), (entity.name, attr)
        for method in ("validate", "transform"):
            assert getattr(type(entity), method) is not getattr(Entity, method), (entity.name, method)
