import numpy as np

from ddad.diffusion.store import ResultStore


def test_a_result_counts_as_done_only_for_the_inputs_it_was_made_from(tmp_path):
    store = ResultStore.open(tmp_path, {"t": 250})
    assert not store.has("test/good/000", "digest-a")
    store.save("test/good/000", source=np.str_("digest-a"), image=np.zeros(2))
    assert store.has("test/good/000", "digest-a")
    assert not store.has("test/good/000", "digest-b")
    store.save("test/good/001", image=np.zeros(2))
    assert not store.has("test/good/001", "")
