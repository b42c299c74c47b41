"""lite_tf: memory-efficient episodic meta-learning (LITE) in TensorFlow / Keras 3.

TensorFlow itself is chosen through an extra so that a CPU machine never pulls a CUDA build:
  pip install -e '.[cpu]'    # tensorflow-cpu (Linux x86-64, Windows)
  pip install -e '.[gpu]'    # tensorflow[and-cuda] (Linux, NVIDIA GPUs)
  pip install -e '.[tf]'     # plain tensorflow (macOS; Linux aarch64, where it is CPU-only)
"""

import setuptools

setuptools.setup(
    name='lite_tf',
    version='0.1.0',
    description='Memory-efficient episodic meta-learning (LITE) with TensorFlow and Keras 3',
    packages=setuptools.find_packages(include=['lite_tf', 'lite_tf.*']),
    python_requires='>=3.10',
    install_requires=[
        'absl-py>=1.4',
        'gin-config>=0.5',
        'keras>=3.5',
        'numpy>=1.24',
        # Fonts (DejaVu, STIX) for the built-in glyph demo data; Pillow comes with it.
        'matplotlib>=3.7',
        # tf.summary's implementation (training summaries); no longer pulled in by TensorFlow.
        'tensorboard>=2.16',
        # Reading weights files (lite_tf.backbones.weights); Keras needs it too.
        'h5py>=3.8',
        # TFDS datasets prepared in a local data_dir (VTAB+MD, lite_tf.data.vtab); never downloads.
        'tensorflow-datasets>=4.9',
    ],
    extras_require={
        'cpu': ['tensorflow-cpu>=2.16'],
        'gpu': ['tensorflow[and-cuda]>=2.16'],
        'tf': ['tensorflow>=2.16'],
        'test': ['pytest>=7', 'pytest-xdist>=3'],
    },
)
