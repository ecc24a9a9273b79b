"""load_dataset and as_dataset: the builtin data sets, .npz files, module:function specs and batch iterables,
with every malformed input refused as a DataError that names the source and what was expected."""

import pickle
import random
import sys
import textwrap
import zipfile

import numpy as np
import pytest
import torch

from edgecompress.cache import cache_dir
from edgecompress.datasets import BUILTIN_DATASETS, Dataset, as_dataset, load_dataset
from edgecompress.errors import DataError


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGECOMPRESS_CACHE", str(tmp_path / "cache"))


def _arrays(n_train=30, n_test=10, shape=(1, 6), labelled=True, seed=0):
    rng = np.random.default_rng(seed)
    out = {"x_train": rng.normal(size=(n_train, *shape)), "x_test": rng.normal(size=(n_test, *shape))}
    if labelled:
        out["y_train"] = rng.integers(0, 3, n_train)
        out["y_test"] = rng.integers(0, 3, n_test)
    return out


def _npz(tmp_path, name="d.npz", **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


# --- builtin data sets -------------------------------------------------------------------------------------

def test_cache_dir_follows_the_environment_at_call_time(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGECOMPRESS_CACHE", str(tmp_path / "a"))
    first = cache_dir("datasets")
    monkeypatch.setenv("EDGECOMPRESS_CACHE", str(tmp_path / "b"))
    second = cache_dir("datasets", "sub")
    assert first == tmp_path / "a" / "datasets" and first.is_dir()
    assert second == tmp_path / "b" / "datasets" / "sub" and second.is_dir()


def test_builtin_digits_split_and_scaling():
    d = load_dataset("builtin:digits")
    assert d.x_train.shape == (1437, 1, 8, 8) and d.x_test.shape == (360, 1, 8, 8)
    assert d.x_train.dtype == torch.float32 and d.y_train.dtype == torch.int64 and d.num_classes == 10
    assert 0.0 <= d.x_train.min() and d.x_train.max() == 1.0
    assert torch.bincount(d.y_test, minlength=10).min() >= 35  # stratified: 36 or 37 per class
    again = load_dataset("builtin:digits")
    torch.testing.assert_close(again.x_test, d.x_test, rtol=0, atol=0)


@pytest.fixture(scope="module")
def mnist1d_cache(tmp_path_factory):
    """One generation of MNIST-1D (~5 s) shared by the tests below; each copies the cache it needs."""
    root = tmp_path_factory.mktemp("mnist1d-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGECOMPRESS_CACHE", str(root))
        state = random.getstate(), np.random.get_state()
        data = load_dataset("builtin:mnist1d")
        after = random.getstate(), np.random.get_state()
    return root, data, state, after


def test_builtin_mnist1d_shapes_cache_and_global_rng(mnist1d_cache, monkeypatch):
    root, d, state_before, state_after = mnist1d_cache
    assert d.x_train.shape == (4000, 1, 40) and d.x_test.shape == (1000, 1, 40)
    assert d.y_train.dtype == torch.int64 and d.num_classes == 10
    assert set(d.y_train.unique().tolist()) == set(range(10))
    assert state_before[0] == state_after[0]  # mnist1d seeds the global generators; we put them back
    assert np.array_equal(state_before[1][1], state_after[1][1]) and state_before[1][2] == state_after[1][2]
    files = list((root / "datasets").glob("mnist1d-*.npz"))
    assert len(files) == 1 and not list((root / "datasets").glob("*.tmp"))
    monkeypatch.setenv("EDGECOMPRESS_CACHE", str(root))
    cached = load_dataset("builtin:mnist1d")  # from the .npz: identical arrays
    torch.testing.assert_close(cached.x_train, d.x_train, rtol=0, atol=0)
    torch.testing.assert_close(cached.y_test, d.y_test, rtol=0, atol=0)


def _damage(source, target, how):
    if how == "truncate":
        target.write_bytes(source.read_bytes()[:5000])
    elif how == "wrong-shape":
        np.savez(target, x_train=np.zeros((3, 40), np.float32), y_train=np.zeros(2, np.int64),
                 x_test=np.zeros((3, 40), np.float32), y_test=np.zeros(3, np.int64))
    elif how == "pickled":
        np.savez(target, x_train=np.array([object()] * 3), y_train=np.zeros(3, np.int64),
                 x_test=np.zeros((3, 40), np.float32), y_test=np.zeros(3, np.int64))
    else:
        target.write_bytes(how)


@pytest.mark.parametrize("how", [b"", b"not a zip at all", "truncate", "wrong-shape", "pickled"])
def test_a_damaged_mnist1d_cache_is_not_trusted(mnist1d_cache, tmp_path, how):
    from edgecompress.datasets.builtin import _read_mnist1d_cache

    source = next((mnist1d_cache[0] / "datasets").glob("mnist1d-*.npz"))
    assert _read_mnist1d_cache(source) is not None
    _damage(source, tmp_path / "bad.npz", how)
    assert _read_mnist1d_cache(tmp_path / "bad.npz") is None


def test_a_damaged_mnist1d_cache_is_regenerated(mnist1d_cache, tmp_path, monkeypatch):
    from edgecompress.datasets import builtin

    root, reference, *_ = mnist1d_cache
    source = next((root / "datasets").glob("mnist1d-*.npz"))
    with np.load(source) as archive:
        arrays = dict(archive)
    calls = []
    # Generation itself is covered by the fixture; here, only that a bad cache leads to it and is replaced.
    monkeypatch.setattr(builtin, "_generate_mnist1d", lambda: calls.append(1) or arrays)
    target = tmp_path / "cache" / "datasets" / source.name
    target.parent.mkdir(parents=True)
    _damage(source, target, "truncate")
    d = load_dataset("builtin:mnist1d")
    assert calls == [1]
    torch.testing.assert_close(d.x_test, reference.x_test, rtol=0, atol=0)
    assert target.read_bytes() == source.read_bytes()  # rewritten whole
    load_dataset("builtin:mnist1d")
    assert calls == [1]  # the repaired cache is used


def test_builtin_names_are_listed_when_unknown():
    assert set(BUILTIN_DATASETS) == {"mnist1d", "digits"}
    with pytest.raises(DataError, match=r"unknown builtin data set 'builtin:cifar'.*builtin:mnist1d.*builtin:digits"):
        load_dataset("builtin:cifar")


# --- .npz files --------------------------------------------------------------------------------------------

def test_npz_with_labels(tmp_path):
    arrays = _arrays()
    arrays["y_train"] = arrays["y_train"].astype(np.float64)  # integral floats are accepted
    d = load_dataset(_npz(tmp_path, **arrays))
    assert d.name == str(tmp_path / "d.npz")
    assert d.x_train.shape == (30, 1, 6) and d.x_train.dtype == torch.float32
    assert d.y_train.dtype == torch.int64 and d.labelled
    np.testing.assert_allclose(d.x_test.numpy(), arrays["x_test"].astype(np.float32))
    assert d.num_classes == int(max(arrays["y_train"].max(), arrays["y_test"].max())) + 1


def test_npz_without_labels_and_as_a_path_object(tmp_path):
    d = load_dataset(_npz(tmp_path, **_arrays(labelled=False)))
    assert d.y_train is None and d.y_test is None and d.num_classes is None and not d.labelled


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nope\.npz does not exist.*x_train, y_train, x_test, y_test"):
        load_dataset(str(tmp_path / "nope.npz"))


def test_a_file_that_is_not_a_zip(tmp_path):
    path = tmp_path / "d.npz"
    path.write_bytes(b"x_train,y_train\n1,2\n")
    with pytest.raises(DataError, match=r"d\.npz is not an \.npz archive.*numpy\.savez"):
        load_dataset(path)


@pytest.mark.parametrize("drop,match", [
    ("x_test", r"found keys \[x_train, y_test, y_train\] \(missing x_test\)"),
    ("y_test", r"found y_train but no y_test"),
])
def test_missing_keys(tmp_path, drop, match):
    arrays = _arrays()
    del arrays[drop]
    with pytest.raises(DataError, match=match) as info:
        load_dataset(_npz(tmp_path, **arrays))
    assert "d.npz" in str(info.value)


def test_unexpected_keys_are_refused_not_dropped(tmp_path):
    with pytest.raises(DataError, match=r"unexpected x_val.*expected x_train, y_train, x_test, y_test"):
        load_dataset(_npz(tmp_path, **_arrays(), x_val=np.zeros((2, 6))))


class _Exploit:
    def __reduce__(self):
        import os

        return (os.system, ("touch EXPLOITED",))


def test_pickled_object_arrays_are_refused_and_never_executed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    arrays = _arrays()
    arrays["y_train"] = np.array([_Exploit()] * 30, dtype=object)
    with pytest.raises(DataError, match=r"y_train is an array of Python objects.*unpickled"):
        load_dataset(_npz(tmp_path, **arrays))
    raw = tmp_path / "raw.npz"  # a pickle renamed .npz is not a zip: refused before numpy sees it
    raw.write_bytes(pickle.dumps(_arrays()))
    with pytest.raises(DataError, match="not an .npz archive"):
        load_dataset(raw)
    assert not (tmp_path / "EXPLOITED").exists()


def test_a_zip_that_holds_no_arrays(tmp_path):
    path = tmp_path / "d.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("x_train.npy", b"garbage")
    with pytest.raises(DataError, match="x_test"):
        load_dataset(path)
    with zipfile.ZipFile(path, "a") as z:
        z.writestr("x_test.npy", b"garbage")
    with pytest.raises(DataError, match=r"entry x_(train|test) is not a valid \.npy array"):
        load_dataset(path)


@pytest.mark.parametrize("key,value,match", [
    ("y_train", np.zeros((30, 1), np.int64), r"y_train has shape \(30, 1\); expected \(30,\)"),
    ("y_train", np.zeros(29, np.int64), r"y_train has shape \(29,\); expected \(30,\)"),
    ("y_test", np.full(10, 0.5), r"y_test holds non-integer values \(e\.g\. .*0\.5\)"),
    ("y_test", np.full(10, np.nan), r"y_test holds non-integer values"),
    ("y_train", -np.ones(30, np.int64), r"negative label -1"),
    ("y_train", np.array(["a"] * 30), r"y_train has dtype <U1; expected integer class indices"),
    ("x_train", np.zeros(30), r"x_train has shape \(30,\); expected \(N, \.\.\.\)"),
    ("x_test", np.zeros((10, 2, 6)), r"train samples have shape \(1, 6\) but test samples have \(2, 6\)"),
    ("x_test", np.zeros((0, 1, 6)), r"x_test has shape \(0, 1, 6\): no samples"),
    ("x_train", np.array([["a"] * 6] * 30), r"x_train has dtype <U1; expected real numbers"),
    ("x_train", np.zeros((30, 1, 6), np.complex64), r"x_train has dtype complex64"),
])
def test_malformed_arrays(tmp_path, key, value, match):
    arrays = {**_arrays(), key: value}
    with pytest.raises(DataError, match=match) as info:
        load_dataset(_npz(tmp_path, **arrays))
    assert str(tmp_path / "d.npz") in str(info.value)


@pytest.mark.parametrize("bad", [np.nan, np.inf, 1e39])  # 1e39 overflows float32 to inf
def test_non_finite_inputs(tmp_path, bad):
    arrays = _arrays()
    arrays["x_test"][3, 0, 2] = bad
    with pytest.raises(DataError, match=r"x_test contains 1 NaN or Inf values"):
        load_dataset(_npz(tmp_path, **arrays))


# --- module:function specs ---------------------------------------------------------------------------------

@pytest.fixture
def data_module(tmp_path, monkeypatch):
    (tmp_path / "ec_user_data.py").write_text(textwrap.dedent("""
        import numpy as np
        import torch
        from edgecompress.datasets import Dataset

        rng = np.random.default_rng(0)
        X = rng.normal(size=(40, 5)).astype(np.float32)
        Y = rng.integers(0, 4, 40)

        def as_tuple():
            return torch.from_numpy(X[:30]), torch.from_numpy(Y[:30]), X[30:], Y[30:]

        def as_mapping():
            return {"x_train": X[:30], "x_test": X[30:]}

        def as_dataset():
            return Dataset("mine", torch.from_numpy(X[:30]), None, torch.from_numpy(X[30:]), None)

        def wrong():
            return [X, Y]

        def typo_keys():
            return {"x_train": X, "x_tset": X}

        def raises():
            raise RuntimeError("disk on fire")

        NOT_CALLABLE = 3
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "ec_user_data"
    sys.modules.pop("ec_user_data", None)


def test_function_specs(data_module):
    d = load_dataset(f"{data_module}:as_tuple")
    assert d.x_train.shape == (30, 5) and d.y_test.dtype == torch.int64 and d.name == f"{data_module}:as_tuple"
    m = load_dataset(f"{data_module}:as_mapping")
    assert m.y_train is None and m.x_test.shape == (10, 5)
    assert load_dataset(f"{data_module}:as_dataset").name == "mine"


@pytest.mark.parametrize("spec,match", [
    ("ec_no_such_module_xyz:load", r"cannot import the data module of 'ec_no_such_module_xyz:load'"),
    ("{mod}:missing", r"'{mod}:missing'.*has no attribute 'missing'"),
    ("{mod}:NOT_CALLABLE", r"'{mod}:NOT_CALLABLE'.*not a function"),
    ("{mod}:wrong", r"data function '{mod}:wrong' returned a list of 2 items; expected a Dataset"),
    ("{mod}:typo_keys", r"{mod}:typo_keys: found keys \[x_train, x_tset\] \(missing x_test; unexpected x_tset\)"),
    ("{mod}:raises", r"'{mod}:raises' raised RuntimeError: disk on fire"),
])
def test_bad_function_specs(data_module, spec, match):
    with pytest.raises(DataError, match=match.format(mod=data_module)):
        load_dataset(spec.format(mod=data_module))


@pytest.mark.parametrize("spec", ["mnist1d", "data/without/suffix", "a b:c", ""])
def test_unrecognised_specs_list_the_accepted_forms(spec):
    with pytest.raises(DataError, match=r"expected 'builtin:mnist1d', 'builtin:digits', a path to an \.npz"):
        load_dataset(spec)


def test_a_spec_of_the_wrong_type():
    with pytest.raises(DataError, match="cannot load data from a int"):
        load_dataset(3)


# --- iterables of batches (the Python API) -----------------------------------------------------------------

def _batches(n_batches=5, size=8, labelled=True, numpy=False):
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n_batches):
        x = torch.randn(size, 1, 12, generator=g)
        y = torch.randint(0, 3, (size,), generator=g)
        x, y = (x.numpy(), y.numpy()) if numpy else (x, y)
        out.append((x, y) if labelled else x)
    return out


def test_a_dataset_or_spec_passes_through(tmp_path):
    d = Dataset("d", torch.zeros(4, 3), None, torch.zeros(2, 3), None)
    assert as_dataset(d) is d
    assert as_dataset(_npz(tmp_path, **_arrays())).x_train.shape == (30, 1, 6)
    with pytest.raises(DataError, match="eval_data goes with an iterable of batches"):
        as_dataset(d, eval_data=_batches())


@pytest.mark.parametrize("numpy", [False, True])
def test_batches_are_materialised_with_a_seeded_holdout(numpy):
    batches = _batches(numpy=numpy)
    d = as_dataset(batches, name="mine")
    assert d.name == "mine" and d.x_train.shape == (32, 1, 12) and d.x_test.shape == (8, 1, 12)
    assert d.x_train.dtype == torch.float32 and d.y_train.dtype == torch.int64
    all_x = torch.cat([torch.as_tensor(x) for x, _ in batches])
    together = torch.cat([d.x_train, d.x_test])
    assert sorted(together[:, 0, 0].tolist()) == sorted(all_x[:, 0, 0].tolist())  # a split, nothing lost
    again = as_dataset(iter(_batches(numpy=numpy)))  # one-shot iterators work and the split repeats
    torch.testing.assert_close(again.x_test, d.x_test, rtol=0, atol=0)
    torch.testing.assert_close(again.y_train, d.y_train, rtol=0, atol=0)


def test_unlabelled_batches_and_eval_data():
    d = as_dataset(_batches(labelled=False), eval_data=_batches(2, labelled=False))
    assert d.y_train is None and d.x_train.shape == (40, 1, 12) and d.x_test.shape == (16, 1, 12)
    lab = as_dataset(_batches(), eval_data=[(x, y) for x, y in _batches(1)])
    assert lab.x_test.shape == (8, 1, 12) and lab.num_classes == int(torch.cat([lab.y_train, lab.y_test]).max()) + 1


def test_a_torch_dataloader_is_accepted():
    x, y = torch.randn(50, 3), torch.randint(0, 2, (50,))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)  # yields lists
    d = as_dataset(loader)
    assert d.x_train.shape[0] + d.x_test.shape[0] == 50 and d.x_test.shape[0] == 10


@pytest.mark.parametrize("data,match", [
    ([], r"mine: the iterable yielded no batches"),
    (iter(()), r"yielded no batches"),
    (None, r"no data given"),
    (7, r"a int is not an iterable of batches"),
    (torch.zeros(10, 3), r"got a single Tensor of shape \(10, 3\).*\[\(x, y\)\]"),
    ([(torch.zeros(4, 3), torch.zeros(4, dtype=torch.long)), torch.zeros(4, 3)],
     r"batch 1 has no labels but batch 0 has; give labels with every batch or with none"),
    ([torch.zeros(4, 3), (torch.zeros(4, 3), torch.zeros(4, dtype=torch.long))],
     r"batch 1 has labels but batch 0 has none"),
    ([torch.zeros(4, 3), torch.zeros(4, 5)], r"batch 1 has samples of shape \(5,\) but batch 0 has \(3,\)"),
    ([(torch.zeros(4, 3), torch.zeros(3, dtype=torch.long))], r"batch 0 labels has shape \(3,\); expected \(4,\)"),
    ([(torch.zeros(4, 3), torch.zeros(4), torch.zeros(4))], r"batch 0 is a tuple of 3 items"),
    ([(torch.zeros(4, 3), [0, 1, 0, 1])], r"batch 0 labels is a list of 4 items; expected a numpy array or a torch"),
    ([torch.full((4, 3), float("nan"))], r"batch 0 inputs contains 12 NaN or Inf values"),
    ([torch.zeros(1, 3)], r"1 sample cannot be split into train and test"),
])
def test_bad_batches(data, match):
    with pytest.raises(DataError, match=match):
        as_dataset(data, name="mine")


def test_labelled_data_with_unlabelled_eval_data():
    with pytest.raises(DataError, match="data is labelled but eval_data is unlabelled"):
        as_dataset(_batches(), eval_data=_batches(labelled=False))
    with pytest.raises(DataError, match="eval_data must be an iterable of batches"):
        as_dataset(_batches(), eval_data="builtin:digits")


def test_low_precision_tensors_are_widened():
    x = torch.randn(10, 4).to(torch.bfloat16)
    d = as_dataset([(x, torch.arange(10) % 2)])
    assert d.x_train.dtype == torch.float32
    torch.testing.assert_close(torch.cat([d.x_train, d.x_test]).sort(0).values, x.float().sort(0).values)
