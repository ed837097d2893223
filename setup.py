"""blogflow: event-driven dataflow backend of a blogging platform, on Apache Beam."""

from setuptools import find_packages, setup

REQUIRED = [
    "apache-beam>=2.77,<2.78",
    "boto3>=1.40,<2",
    "redis[hiredis]>=5.0,<9",
    "pymongo>=4.10,<5",
    "PyGithub>=2.4,<3",
    "websockets>=13,<18",
    "google-cloud-pubsub>=2.20,<3",
    "pydantic>=2.8,<3",
    "click>=8.1,<9",
    "orjson>=3.10,<4",
    "tenacity>=8.2,<10",
    "cryptography>=42,<51",
]

EXTRAS = {
    "test": [
        "pytest>=8,<10",
        "hypothesis>=6.100,<7",
        "pytest-timeout>=2.3,<3",
        "moto[server]>=5.0,<6",
        "nx-27017>=0.8,<0.9",
        "psutil>=5.9,<8",
        "playwright>=1.50,<2",  # drives Debian's /usr/bin/chromium; no browser download
        "ruff>=0.6",
        "mypy>=1.10",
    ],
    "dataflow": ["apache-beam[gcp]>=2.77,<2.78"],
    # --secret-key-secret: the workers read blogflow's secret key from Secret Manager
    "gcp-secrets": ["google-cloud-secret-manager>=2.20,<3"],
}

setup(
    name="blogflow",
    version="0.1.0",
    description="Event-driven dataflow backend of a blogging platform, on Apache Beam",
    python_requires=">=3.10",
    packages=find_packages(include=["blogflow", "blogflow.*"]),
    package_data={"blogflow": ["py.typed"]},
    install_requires=REQUIRED,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["blogflow=blogflow.cli:main"]},
)
