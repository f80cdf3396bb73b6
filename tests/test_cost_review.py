"""Review fixes of the cost work: plugins and seed FLOPs, baseline costs, model selection, ONNX folding."""
import pytest
import timm

import zamzoo
from zamzoo.bench.flops import seed_flops
from zamzoo.models import ATTENTIONS
from zamzoo.models.plugins import unregister_attention

pytestmark = pytest.mark.usefixtures('single_thread')


@pytest.fixture(autouse=True)
def forget_registrations():
    """Leave the zoo as the other test files expect it: only its own rows."""
    before = set(ATTENTIONS)
    yield
    for name in set(ATTENTIONS) - before:
        unregister_attention(name)


def test_a_plugin_of_a_zoo_class_leaves_the_zoo_models_seed_flops_alone():
    model = timm.create_model('mobilenet_se')
    before = seed_flops(model)
    zamzoo.register_attention('se8', zamzoo.layers.SE, rd_divisor=8)
    assert seed_flops(model) == before == 182_416_936
