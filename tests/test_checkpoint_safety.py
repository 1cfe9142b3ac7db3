"""Safety of checkpoint reading.

- A checkpoint carrying a pickle payload (one that would create a file) is
  refused with a clear error, and the file is never created: by mmswin's
  loader, by the converter CLI, and by mmengine's own ``load_checkpoint``
  (``load_from``) under torch's weights-only default.
- A truncated or corrupt file gives an error naming the file.
- mmengine's resume works in a fresh process under the weights-only default
  once mmswin is imported, with no environment switch; without mmswin the
  same resume fails (the control).
"""
import os
import os.path as osp
import subprocess
import sys
import textwrap

import pytest
import torch
from helpers import ROOT, TOOL_ENV
from layout_factories import make_model, official_layout
from mmengine.runner import load_checkpoint

from mmswin.checkpoint import (
    CorruptCheckpointError,
    UnsafeCheckpointError,
    load_pretrained,
)


class CreatesFile:
    """Unpickling this (unsafely) opens ``path`` for writing."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return open, (self.path, 'w')


def _clean_env() -> dict:
    """The tools' environment with torch's own weights_only default: no
    inherited TORCH_FORCE_* switch may turn the safety off (or on)."""
    return {k: v for k, v in TOOL_ENV.items()
            if not k.startswith('TORCH_FORCE')}


@pytest.fixture
def payload_checkpoint(tmp_path):
    marker = tmp_path / 'pwned'
    path = tmp_path / 'evil.pth'
    state = official_layout(make_model().state_dict())
    torch.save({'model': state, 'meta': CreatesFile(str(marker))}, path)
    return str(path), marker


def test_payload_is_real(tmp_path):
    """Control: unpickled unsafely, the payload does create its file."""
    marker = tmp_path / 'control'
    torch.save({'meta': CreatesFile(str(marker))}, tmp_path / 'c.pth')
    torch.load(tmp_path / 'c.pth', weights_only=False)
    assert marker.exists()


def test_loader_refuses_payload(payload_checkpoint):
    path, marker = payload_checkpoint
    with pytest.raises(UnsafeCheckpointError) as err:
        load_pretrained(make_model(), path)
    message = str(err.value)
    assert message.startswith(f'Refusing to load {path!r}: it holds pickled '
                              'Python objects (')
    assert 'open' in message.split('(')[1]
    assert not marker.exists()


def test_mmengine_load_from_refuses_payload(payload_checkpoint):
    """The ``load_from`` / ``tools/test.py`` path reads with torch's
    default, which is weights-only under torch >= 2.6."""
    path, marker = payload_checkpoint
    with pytest.raises(Exception, match='Weights only load failed'):
        load_checkpoint(make_model(), path, map_location='cpu')
    assert not marker.exists()


def test_converter_refuses_payload(payload_checkpoint, tmp_path):
    path, marker = payload_checkpoint
    result = subprocess.run(
        [sys.executable, 'tools/model_converters/convert_checkpoint.py',
         path, str(tmp_path / 'out.pth')], cwd=ROOT, env=_clean_env(),
        capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert 'Refusing to load' in result.stderr
    assert not marker.exists() and not (tmp_path / 'out.pth').exists()


def _truncated(tmp_path, name: str) -> str:
    full = tmp_path / ('full_' + name)
    state = official_layout(make_model().state_dict())
    if name.endswith('.safetensors'):
        from safetensors.torch import save_file
        save_file(state, str(full))
    else:
        legacy = name.startswith('legacy')
        torch.save({'model': state}, full,
                   _use_new_zipfile_serialization=not legacy)
    data = full.read_bytes()
    path = tmp_path / name
    path.write_bytes(data[:len(data) // 2])
    return str(path)


@pytest.mark.parametrize('name', ['zip.pth', 'legacy.pth',
                                  'model.safetensors'])
def test_truncated_file_names_the_file(tmp_path, name):
    path = _truncated(tmp_path, name)
    with pytest.raises(CorruptCheckpointError) as err:
        load_pretrained(make_model(), path)
    assert f'checkpoint {path!r}: the file is truncated or corrupt' in str(
        err.value)


def test_garbage_and_empty_files(tmp_path):
    garbage = tmp_path / 'garbage.pth'
    garbage.write_bytes(os.urandom(4096))
    with pytest.raises(CorruptCheckpointError, match='garbage.pth'):
        load_pretrained(make_model(), str(garbage))
    empty = tmp_path / 'empty.pth'
    empty.write_bytes(b'')
    with pytest.raises(CorruptCheckpointError, match='the file is empty'):
        load_pretrained(make_model(), str(empty))


RUN = textwrap.dedent('''
    import sys
    import torch
    import torch.nn as nn
    from mmengine.model import BaseModel
    from mmengine.runner import Runner
    from torch.utils.data import Dataset

    class Toy(BaseModel):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(2, 1)

        def forward(self, inputs, labels=None, mode='loss'):
            out = self.fc(inputs).squeeze(-1)
            return dict(loss=((out - labels) ** 2).mean())

    class Points(Dataset):
        def __len__(self):
            return 8

        def __getitem__(self, i):
            return dict(inputs=torch.full((2, ), float(i)),
                        labels=torch.tensor(float(i)))

    def main(work_dir, max_iters, resume, with_mmswin):
        if with_mmswin == '1':
            import mmswin  # noqa: F401
        runner = Runner(
            model=Toy(), work_dir=work_dir,
            train_dataloader=dict(dataset=Points(), batch_size=2,
                                  sampler=dict(type='DefaultSampler'),
                                  collate_fn=dict(type='default_collate')),
            optim_wrapper=dict(optimizer=dict(type='AdamW', lr=1e-2)),
            param_scheduler=[
                dict(type='LinearLR', start_factor=0.1, by_epoch=False,
                     begin=0, end=2),
                dict(type='MultiStepLR', milestones=[3], by_epoch=False)],
            train_cfg=dict(by_epoch=False, max_iters=int(max_iters)),
            default_hooks=dict(checkpoint=dict(
                type='CheckpointHook', interval=2, by_epoch=False)),
            resume=resume == '1', randomness=dict(seed=0))
        runner.train()
        lr = runner.message_hub.get_scalar('train/lr')
        return f'RESULT iter {runner.iter} lr_history {len(lr.data[0])}'

    if __name__ == '__main__':
        print(main(*sys.argv[1:5]))
''')


def _run(tmp_path, max_iters, resume, with_mmswin):
    """Run the script above in a fresh Python process."""
    script = tmp_path / 'run.py'
    script.write_text(RUN)
    return subprocess.run(
        [sys.executable, str(script), str(tmp_path / 'work'),
         str(max_iters), str(int(resume)), str(int(with_mmswin))],
        env=_clean_env(), capture_output=True, text=True, timeout=300)


def test_resume_under_weights_only_default(tmp_path):
    # The first run only saves, so it may share this process.
    namespace = {'__name__': 'first_run'}
    exec(compile(RUN, 'run.py', 'exec'), namespace)
    assert namespace['main'](str(tmp_path / 'work'), '4', '0', '1') == \
        'RESULT iter 4 lr_history 4'
    assert osp.exists(tmp_path / 'work' / 'iter_4.pth')

    control = _run(tmp_path, 6, resume=True, with_mmswin=False)
    assert control.returncode != 0
    assert 'Weights only load failed' in control.stderr

    resumed = _run(tmp_path, 6, resume=True, with_mmswin=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert 'resumed' in resumed.stdout + resumed.stderr
    # 4 restored log entries + 2 new iterations: the message hub came back
    assert 'RESULT iter 6 lr_history 6' in resumed.stdout


def test_url_goes_through_download_then_safe_read(tmp_path, monkeypatch,
                                                  payload_checkpoint):
    """http(s) checkpoints are downloaded into torch hub's cache, then read
    like local files (the network call itself is replaced here)."""
    good = tmp_path / 'good.pth'
    source = make_model()
    torch.save({'model': official_layout(source.state_dict())}, good)
    evil, marker = payload_checkpoint
    files = {'good.pth': good, 'evil.pth': evil}
    fetched = []

    def fake_download(url, dst, hash_prefix=None, progress=True):
        fetched.append(url)
        with open(files[url.rsplit('/', 1)[1]], 'rb') as f:
            data = f.read()
        with open(dst, 'wb') as f:
            f.write(data)

    monkeypatch.setattr(torch.hub, 'download_url_to_file', fake_download)
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path / 'hub'))
    model = make_model(seed=9)
    load_pretrained(model, 'https://example.com/ckpt/good.pth')
    load_pretrained(model, 'https://example.com/ckpt/good.pth')  # cached
    assert fetched == ['https://example.com/ckpt/good.pth']
    assert (tmp_path / 'hub/checkpoints/good.pth').exists()
    assert torch.equal(model.patch_embed.proj.weight,
                       source.patch_embed.proj.weight)
    with pytest.raises(UnsafeCheckpointError):
        load_pretrained(model, 'https://example.com/ckpt/evil.pth')
    assert not marker.exists()
