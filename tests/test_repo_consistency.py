"""What the repository commits agrees with the code: the shipped manifest is valid and names zoo models, and the
README / MODEL_CARD tables and docs/bench's counts are what the generators write today. These fail when a commit
forgets to regenerate something, not when behaviour changes."""
import json
from pathlib import Path

import pytest
import timm

import zamzoo
from zamzoo.bench.flops import count_macs, count_params, seed_flops
from zamzoo.bench.tables import update_tables
from zamzoo.models import TAGS
from zamzoo.pretrained import load_manifest, manifest_problems, shipped_manifest


def test_shipped_manifest_is_package_data_and_valid():
    # valid whatever it holds: a legitimate push adds records, and each must be one zamzoo can load
    path = shipped_manifest()
    assert path == Path(zamzoo.__file__).parent / 'pretrained' / 'manifest.json'
    assert json.loads(path.read_text())['schema'] == 1
    assert manifest_problems(path) == []  # no invalid or duplicated record
    records = load_manifest(path)
    assert all(r['model'] in zamzoo.list_models() and r['tag'] in TAGS for r in records), records


def test_readme_and_model_card_tables_are_generated_from_committed_results():
    # README.md / MODEL_CARD.md carry exactly what `zamzoo bench tables` writes from docs/bench and the manifest
    assert update_tables(check=True) == [], 'tables out of date: run `zamzoo bench tables`'


@pytest.mark.parametrize('name', ['resnet18_cbam', 'mobilenetv2_bam'])
def test_committed_counts_match_the_models(name):
    # docs/bench/models_counts.json feeds the tables: it must describe the models as they are built today
    from zamzoo.bench.tables import DEFAULT_RESULTS, load_reports

    rows = {r['model']: r for rep in load_reports([DEFAULT_RESULTS / 'models_counts.json']) for r in rep['results']}
    stale = 'docs/bench is stale: run `zamzoo bench models --counts-only --out docs/bench`, then `zamzoo bench tables`'
    assert set(rows) == set(zamzoo.list_models()), stale
    model = timm.create_model(name)
    assert (rows[name]['params'], rows[name]['macs'], rows[name]['seed_flops']) == (
        count_params(model), count_macs(model), seed_flops(model)), stale
