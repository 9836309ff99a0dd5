"""The sparse training kernels of the TopK family: the sorted sparse code, the sparse encoder backward, the
embedding-bag decoder, exact grouped top-k selection and the reused pre-activation buffer."""
