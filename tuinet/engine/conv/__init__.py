"""Convolution and pooling on NHWC float32 images: the layers and the Numba kernels they run.

* :mod:`~tuinet.engine.conv.layers`: Conv2D, MaxPool2D, AvgPool2D, GlobalAvgPool and their shape helpers;
* :mod:`~tuinet.engine.conv.plan`: the offset tables and panel layout of a Conv2D's implicit GEMMs;
* :mod:`~tuinet.engine.conv.kernels`: the convolution and pooling kernels;
* :mod:`~tuinet.engine.conv.microkernels`: the register-blocked micro-kernels the convolution GEMMs run on;
* :mod:`~tuinet.engine.conv.winograd`: Winograd's F(4x4, 3x3) and F(3x3, 4x4) for all three passes of 3x3
  stride-1 "same" convolutions over whole vectors of channels;
* :mod:`~tuinet.engine.conv.codegen`: how those are compiled (the micro-kernel generator, the SLP setting).

Kernel strategy in short (details in the modules; measured figures in docs/cnn.md):

* Conv2D runs every product as an implicit GEMM (no im2col buffer) on register-blocked micro-kernels: a tile
  of 3-8 rows x 8-32 columns of the result stays in vector registers for the whole reduction. Forward: rows
  are output positions, columns output channels, the reduction runs over the KH*KW*Cin taps. Weight gradient:
  rows are taps, the reduction runs over the output positions. Input gradient: the full convolution of dy
  (scattered into a zero-bordered buffer) with the spatially flipped, channel-transposed kernel, each tile of
  rows reducing only over the kernel rows that reach dy (not over the zero border above and below).
* 3x3 stride-1 "same" convolutions over whole vectors of channels run all three passes by Winograd's minimal
  filtering instead (4x fewer multiply-adds): transformed 6x6 input blocks, 36 small products on the same
  micro-kernels, the output transformed back (:mod:`~tuinet.engine.conv.winograd`; ``TUINET_WINOGRAD=0`` turns it
  off).
* ``prange`` runs over one batch chunk per thread; each chunk sums its weight and bias gradients into its own
  partial buffer, and the partials are added afterwards (no racing ``+=`` inside ``prange``).
* MaxPool2D keeps, per output element, the flat index of the input element that won, and its backward pass
  scatters the gradient there; 2x2 windows have their own one-pass kernel.
* A Conv2D followed by a MaxPool2D runs fused (:meth:`Conv2D.forward_fused`): the convolution's output never
  goes through memory; results are bit-for-bit those of the two layers one after the other. A ReLU after the
  pooling, or right after a direct (not Winograd) convolution, runs in the same pass.
"""

from tuinet.engine.conv.layers import AvgPool2D, Conv2D, GlobalAvgPool, MaxPool2D, conv_geometry, torch_uniform_init

__all__ = ["AvgPool2D", "Conv2D", "GlobalAvgPool", "MaxPool2D", "conv_geometry", "torch_uniform_init"]
