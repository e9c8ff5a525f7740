"""nd_fairseq: Negative Distillation (Li et al., NAACL 2022) as a fairseq plugin."""

from setuptools import find_packages, setup

FAIRSEQ = [
    # PyPI fairseq 0.12.2 does not import on Python >= 3.11 and its pins (hydra-core<1.1,
    # omegaconf<2.1) are rejected by pip >= 24.1; fairseq-fixed ships the same `fairseq`
    # import package with those fixed and builds on 3.10-3.12.
    "fairseq-fixed>=0.12.3; python_version >= '3.10'",
    "fairseq==0.12.2; python_version < '3.10'",
]

setup(
    name="nd_fairseq",
    version="0.1.0",
    description="Negative Distillation for open-domain dialogue as a fairseq --user-dir plugin",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["nd_fairseq", "nd_fairseq.*"]),
    include_package_data=True,
    install_requires=FAIRSEQ
    + [
        "torch>=2.6",
        "numpy>=1.24",
        "sentencepiece>=0.1.99",
        "sacrebleu>=2.0",
        "sacremoses>=0.1",
        "tqdm>=4.60",
        "chitchat-dataset>=0.9.0",
        "matplotlib>=3.6",
    ],
    extras_require={
        "test": ["pytest>=7", "nltk>=3.8", "selenium>=4.10", "statsmodels>=0.13"],
    },
    entry_points={
        "console_scripts": [
            "nd-prepare=nd_fairseq.data.prepare:main",
            "nd-filter=nd_fairseq.filtering.cli:main",
            "nd-spm=nd_fairseq.data.spm:main",
            "nd-eval=nd_fairseq.evaluation.cli:main",
            "nd-pneg=nd_fairseq.pneg.cli:main",
            "nd-chat=nd_fairseq.chat.cli:main",
            "nd-humaneval=nd_fairseq.humaneval.cli:main",
        ]
    },
    classifiers=[
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
