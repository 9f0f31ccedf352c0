#!/usr/bin/python3
"""The real denoiser against the Python reference sampler, on the fixture bundles.

  PYTHONPATH=build/python engine_reference_test.py FIXTURE_DIR BIN_DIR

tools/import_diffusers.py's `sample` is the project's own transcription of
diffusers' guided DDIM, bundle inputs included: the context, and for the
SDXL-shaped fixture (tests/fixtures/make_sdxl_fixture.py) the second
tokenizer's padding, the pooled embedding, the size ids and the zero encoding
of an empty negative prompt. Here the denoiser (one dgrid-denoiser on
loopback, its Branch RPC) runs the same deterministic trajectories (eta 0,
the same x_T, ids from its own Tokenize RPC) and its final latents must
agree to 1e-4 relative: a wrong order of the time_ids, a pooled embedding
from the wrong row, or padding built on the wrong side fails it.
"""
import os
import sys
import unittest

import grpc
import torch

FIXTURES = sys.argv.pop(1) if len(sys.argv) > 2 else os.environ.get("DGRID_FIXTURES",
                                                                     "build/fixtures")
BINS = sys.argv.pop(1) if len(sys.argv) > 1 else "build/bin"
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [os.path.join(ROOT, "tools"), os.path.join(ROOT, "clients", "python", "tests")]
import import_diffusers as reference  # noqa: E402
from dgrid.v1 import denoiser_pb2, denoiser_pb2_grpc, tensor_pb2  # noqa: E402
from live_stack import LiveStack  # noqa: E402

STEPS = 10
GUIDANCE = 5.0
TOLERANCE = 1e-4  # relative: max |engine - reference| / max |reference|


def to_tensor(x):
    return tensor_pb2.Tensor(shape=list(x.shape), dtype=tensor_pb2.DATA_TYPE_FP32,
                             raw_contents=x.contiguous().numpy().astype("<f4").tobytes())


def from_tensor(t):
    return torch.frombuffer(bytearray(t.raw_contents), dtype=torch.float32).reshape(list(t.shape))


class EngineAgainstReference(unittest.TestCase):
    """One bundle: subclasses set BUNDLE."""
    BUNDLE = None

    @classmethod
    def setUpClass(cls):
        cls.dir = os.path.join(FIXTURES, cls.BUNDLE)
        cls.bundle = reference.load_bundle(cls.dir)
        cls.stack = LiveStack(cls.dir, bins=BINS, threads=2)
        cls.stack.start()
        cls.channel = grpc.insecure_channel(cls.stack.denoisers[0])
        cls.denoiser = denoiser_pb2_grpc.DenoiserStub(cls.channel)

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()
        cls.stack.stop()

    def ids(self, text):
        """[1, L] padded ids, tokenized by the denoiser itself."""
        response = self.denoiser.Tokenize(denoiser_pb2.TokenizeRequest(texts=[text]), timeout=30)
        tokenizer = self.bundle.manifest["conditioning"]["tokenizer"]
        row = list(response.texts[0].ids)
        row += [tokenizer["pad_id"]] * (tokenizer["max_length"] - len(row))
        return torch.tensor([row], dtype=torch.long)

    def engine(self, x_T, prompt, negative, size, steps=STEPS, spacing=None):
        request = denoiser_pb2.BranchRequest(
            sampler=denoiser_pb2.SamplerConfig(
                steps=steps, eta=0.0, guidance=GUIDANCE,
                spacing={None: denoiser_pb2.SPACING_UNSPECIFIED,
                         "leading": denoiser_pb2.SPACING_LEADING,
                         "trailing": denoiser_pb2.SPACING_TRAILING,
                         "linspace": denoiser_pb2.SPACING_LINSPACE}[spacing]),
            conditioning=denoiser_pb2.Conditioning(prompt=prompt, negative_prompt=negative))
        if size is not None:
            request.size.CopyFrom(denoiser_pb2.SizeConditioning(
                original_height=size[0], original_width=size[1], crop_top=size[2],
                crop_left=size[3], target_height=size[4], target_width=size[5]))
        trajectory = request.trajectories.add()
        trajectory.path.init_seed = 1
        trajectory.path.segments.add(from_step=0, noise_seed=2)
        trajectory.start_latent.CopyFrom(to_tensor(x_T[0]))
        finals = [e.final for e in self.denoiser.Branch(request, timeout=120)
                  if e.WhichOneof("event") == "final"]
        self.assertEqual(len(finals), 1)
        return from_tensor(finals[0].latent)

    def check(self, prompt, negative="", size=None, seed=0, steps=STEPS, spacing=None):
        g = torch.Generator().manual_seed(seed)
        x_T = torch.randn([1] + self.bundle.manifest["latent_shape"], generator=g)
        uncond = None if negative == "" else self.ids(negative)
        want, _ = reference.sample(self.bundle, self.ids(prompt), uncond, steps=steps,
                                   guidance=GUIDANCE, eta=0.0, size=size, x_T=x_T,
                                   spacing=spacing)
        got = self.engine(x_T, prompt, negative, size, steps, spacing)
        error = (got - want[0]).abs().max().item() / want.abs().max().item()
        print(f"{self.BUNDLE}: {prompt!r} / {negative!r} / size {size} / {steps} steps "
              f"{spacing or 'default'}: relative error {error:.2e}")
        self.assertLess(error, TOLERANCE)
        return got


class SdShaped(EngineAgainstReference):
    BUNDLE = "textlatent"

    def test_prompt_and_negative_prompt(self):
        self.check("a photo of a cat", "a dog")

    def test_empty_negative_prompt_is_the_encoding_of_empty(self):
        self.check("a red car on a snowy road")

    def test_trailing_steps_that_do_not_divide_the_schedule(self):
        # 30 trailing steps: DDIMScheduler.step goes from 966 to 933, not to
        # the next timestep 932; 16 rounds a half to even (811, not 812).
        self.check("a photo of a cat", "a dog", steps=30, spacing="trailing")
        self.check("a red car on a snowy road", steps=16, spacing="trailing")

    def test_linspace_steps(self):
        # DDIM rounds linspace's timesteps (979, 958, ... at 50 steps) and
        # steps t - T // n below each (979 to 959), as DDIMScheduler does.
        self.check("a photo of a cat", "a dog", steps=50, spacing="linspace")
        self.check("a red car on a snowy road", steps=7, spacing="linspace")


class SdxlShaped(EngineAgainstReference):
    BUNDLE = "textxl"

    def test_prompt_and_negative_prompt_at_the_default_size(self):
        self.check("a photo of a cat", "a dog")

    def test_empty_negative_prompt_is_zeros(self):
        self.check("a photo of a cat")

    def test_size_and_crop_conditioning(self):
        default = self.check("an oil painting of a lighthouse", "blurry")
        sized = self.check("an oil painting of a lighthouse", "blurry", size=[16, 24, 4, 2, 0, 0])
        self.assertGreater((default - sized).abs().max().item(), 1e-3)


if __name__ == "__main__":
    unittest.main()
