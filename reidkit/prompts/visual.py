"""Visual prompts generated from the image (MMPL eq. 21).

``P_v = MLP(GAP(Conv(I)))``: a 3x3 convolution, global average pooling and a multilayer
perceptron map each image to ``K`` prompt tokens of the vision transformer's width, which
:class:`~reidkit.clip.CLIPImageEncoder` appends to the patch tokens. A GELU follows the
convolution: without a nonlinearity, average pooling after a linear convolution would reduce
to a linear map of the per-channel image means.
"""

from __future__ import annotations

from torch import Tensor, nn

from reidkit import checks


class VisualPromptGenerator(nn.Module):
    """Image-conditioned prompt tokens ``P_v`` ``(B, K, width)`` (MMPL eq. 21).

    Args:
        num_prompts: number of prompt tokens ``K``.
        width: token width of the vision transformer.
        in_channels: channels of the input (3 for images; a feature map's channels also work).
        hidden: hidden size of the two-layer MLP.
        conv_channels: output channels of the 3x3 convolution.
        stride: stride of the convolution (larger strides make it cheaper on large images).
    """

    def __init__(
        self,
        num_prompts: int,
        width: int,
        in_channels: int = 3,
        hidden: int = 256,
        conv_channels: int = 64,
        stride: int = 1,
    ) -> None:
        super().__init__()
        for name, value in (
            ("num_prompts", num_prompts),
            ("width", width),
            ("in_channels", in_channels),
            ("hidden", hidden),
            ("conv_channels", conv_channels),
            ("stride", stride),
        ):
            checks.check_integer(name, value, 1)
        self.num_prompts = num_prompts
        self.width = width
        self.conv = nn.Conv2d(in_channels, conv_channels, kernel_size=3, stride=stride, padding=1)
        self.activation = nn.GELU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.mlp = nn.Sequential(
            nn.Linear(conv_channels, hidden),
            nn.GELU(),
            nn.Linear(hidden, num_prompts * width),
        )

    def forward(self, images: Tensor) -> Tensor:
        """Prompt tokens for a batch of images.

        Args:
            images: ``(B, in_channels, H, W)``.

        Returns:
            ``(B, K, width)`` visual prompts ``P_v``.
        """
        if images.dim() != 4 or images.shape[1] != self.conv.in_channels:
            raise ValueError(
                f"images must have shape (B, {self.conv.in_channels}, H, W), got "
                f"{tuple(images.shape)}"
            )
        pooled = self.pool(self.activation(self.conv(images))).flatten(1)
        prompts: Tensor = self.mlp(pooled)
        return prompts.view(-1, self.num_prompts, self.width)
