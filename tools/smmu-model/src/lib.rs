//! Software SMMUv3 model: the host tests' oracle.
