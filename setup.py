from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent
version = {}
exec((here / "mlsl_gluon" / "__init__.py").read_text(), version)

setup(
    name="mlsl-gluon",
    version=version["__version__"],
    description="MXNet/Gluon reproduction of MLSL (WACV 2020): SISC pseudo-labels and pseudo weak "
    "labels for unsupervised domain adaptation of semantic segmentation",
    long_description=(here / "README.md").read_text(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["mlsl_gluon", "mlsl_gluon.*"]),
    python_requires=">=3.8,<3.12",
    # Exact versions live in constraints.txt; install with `pip install -c constraints.txt`.
    install_requires=[
        "mxnet>=1.9.1,<1.10",
        "numpy>=1.21,<1.24",
        "gluoncv>=0.10",
        "opencv-python",
        "h5py",
        "cityscapesscripts",
        "click>=8",
        "pyyaml",
        "tqdm",
        "Pillow",
        "matplotlib",
        "psutil",
    ],
    extras_require={
        "gpu": ["mxnet-cu112==1.9.1"],
        "onnx": ["onnx<1.19", "onnxruntime"],
        "test": ["pytest", "pytest-xdist", "ruff", "onnx<1.19", "onnxruntime"],
    },
    entry_points={"console_scripts": ["mlsl-gluon=mlsl_gluon.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
