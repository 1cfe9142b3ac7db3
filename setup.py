import os.path as osp

from setuptools import find_packages, setup


def read_version() -> str:
    scope: dict = {}
    with open(osp.join('mmswin', 'version.py')) as f:
        exec(f.read(), scope)
    return scope['__version__']


setup(
    name='mmswin',
    version=read_version(),
    description='Swin Transformer V1/V2 backbones for mmdet 3.x and '
    'mmsegmentation 1.x',
    long_description=open('README.md').read(),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['mmswin', 'mmswin.*']),
    python_requires='>=3.8',
    # What `import mmswin` needs (tests/test_install.py checks the imports).
    # mmcv, mmdet and mmseg serve the configs and tools: the `openmmlab`
    # extra, so pip never swaps a GPU user's torch or CUDA-built mmcv.
    install_requires=[
        'torch>=2.1',
        'mmengine>=0.10.0,<1.0',
        'numpy',
        'safetensors',
    ],
    extras_require={
        'openmmlab': [
            'mmcv>=2.0.0,<2.2.0',
            'mmdet>=3.0.0,<3.4.0',
            'mmsegmentation>=1.0.0,<1.3.0',
        ],
        'tests': [
            'pytest', 'hypothesis', 'transformers', 'ruff', 'pycocotools',
            'shapely', 'scipy', 'terminaltables', 'prettytable', 'ftfy',
            'regex', 'matplotlib',
        ],
        # Export and deployment (tools/deployment, tests/test_export_*).
        # nncf: int8 quantisation (tools/deployment/quantize.py).
        'deploy': ['onnx>=1.17', 'onnxruntime>=1.20', 'onnxscript>=0.2',
                   'openvino>=2025.0', 'nncf>=2.14'],
        # The documentation site (`make docs`, tests/test_docs_build.py).
        'docs': ['mkdocs>=1.6,<2', 'mkdocs-material>=9.5',
                 'mkdocstrings[python]>=0.26'],
    },
    license='Apache-2.0',
    zip_safe=False,
)
