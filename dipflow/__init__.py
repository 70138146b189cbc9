"""dipflow: the theory of overparametrized Deep Inverse Prior networks, executable."""

import importlib
import importlib.metadata

from . import losses as losses, noise as noise
from ._core._store import StudyStore as StudyStore
from ._core._study_tables import load as load
from .generators._activations import (
    Activation as Activation,
    ActivationConstants as ActivationConstants,
    activation_constants as activation_constants,
    available_activations as available_activations,
    get_activation as get_activation,
    register_activation as register_activation,
)
from .generators._convdecoder import ConvDecoder as ConvDecoder
from .generators._networks import (
    MLPDIP as MLPDIP,
    AbstractAutodiffGenerator as AbstractAutodiffGenerator,
    AbstractGenerator as AbstractGenerator,
    TwoLayerDIP as TwoLayerDIP,
)
from .generators._skipnet import (
    ConvBlock as ConvBlock,
    SkipLevel as SkipLevel,
    SkipNet as SkipNet,
)
from .imaging._early_stopping import (
    PatienceStop as PatienceStop,
    WMVState as WMVState,
    oracle_stop as oracle_stop,
    patience_stop as patience_stop,
    theory_stop as theory_stop,
    windowed_variance as windowed_variance,
    wmv_stop as wmv_stop,
)
from .imaging._image_fit import ImageFit as ImageFit, fit_image as fit_image
from .imaging._image_metrics import psnr as psnr, ssim as ssim
from .imaging._images import (
    available_images as available_images,
    load_image as load_image,
)
from .imaging._stopping_rules import (
    ESWMV as ESWMV,
    AbstractStoppingRule as AbstractStoppingRule,
    Oracle as Oracle,
    TheoryTime as TheoryTime,
)
from .imaging._width_study import (
    WidthGrid as WidthGrid,
    run_dip_width as run_dip_width,
)
from .problems._operators import (
    compressed_sensing as compressed_sensing,
    denoising as denoising,
    fourier_sampling as fourier_sampling,
    gaussian_blur as gaussian_blur,
    image_operator as image_operator,
    inpainting as inpainting,
    super_resolution as super_resolution,
)
from .problems._problems import InverseProblem as InverseProblem
from .problems._spectra import (
    SingularValuesTag as SingularValuesTag,
    Spectrum as Spectrum,
    operator_spectrum as operator_spectrum,
)
from .studies._cell_solve import run_cell as run_cell
from .studies._cells import (
    Cell as Cell,
    MLPSpec as MLPSpec,
    ProblemSpec as ProblemSpec,
    Study as Study,
    TrainerSpec as TrainerSpec,
    TwoLayerSpec as TwoLayerSpec,
    study_instance as study_instance,
)
from .studies._figure1 import figure1_study as figure1_study
from .studies._plots import phase_diagram as phase_diagram, plot_figure1 as plot_figure1
from .studies._runner import run_study as run_study
from .studies._statistics import (
    bootstrap_power_law as bootstrap_power_law,
    fit_power_law as fit_power_law,
    transition_curve as transition_curve,
)
from .studies._summary import summary as summary
from .studies._sweep_config import (
    load_study as load_study,
    study_from_dict as study_from_dict,
)
from .theory._generic_certificate import (
    GenericCertificate as GenericCertificate,
    generic_certificate as generic_certificate,
)
from .theory._jacobians import (
    gram as gram,
    gram_matvec as gram_matvec,
    gram_min_eigenvalue as gram_min_eigenvalue,
    jacobian as jacobian,
    lipschitz_bound as lipschitz_bound,
    measurement_kernel as measurement_kernel,
    measurement_kernel_matvec as measurement_kernel_matvec,
    measurement_min_eigenvalue as measurement_min_eigenvalue,
    measurement_rate as measurement_rate,
    reduced_operator as reduced_operator,
    sigma_min_gram as sigma_min_gram,
    sigma_min_jacobian as sigma_min_jacobian,
)
from .theory._lipschitz import layerwise_lip_bound as layerwise_lip_bound
from .theory._spectral import (
    EigenEstimate as EigenEstimate,
    smallest_eigenvalue as smallest_eigenvalue,
)
from .theory._theory import (
    Certificate as Certificate,
    MeasurementCertificate as MeasurementCertificate,
    measurement_certificate as measurement_certificate,
    theorem1 as theorem1,
)
from .training._both_layers import BothLayersDynamics as BothLayersDynamics
from .training._dynamics import (
    AbstractDynamics as AbstractDynamics,
    FullDynamics as FullDynamics,
)
from .training._reduced import ReducedDynamics as ReducedDynamics
from .training._reductions import (
    is_reducible as is_reducible,
    reduction as reduction,
)
from .training._save import SaveAt as SaveAt
from .training._setup import loss as loss, make_dynamics as make_dynamics
from .training._solution import (
    RESULTS as RESULTS,
    Solution as Solution,
    Trajectory as Trajectory,
    result_name as result_name,
)
from .training._train import (
    gradient_descent as gradient_descent,
    gradient_flow as gradient_flow,
    heavy_ball as heavy_ball,
    inertial_flow as inertial_flow,
    nesterov as nesterov,
    optimize as optimize,
    train as train,
)
from .training._trainers import (
    AbstractDiscreteTrainer as AbstractDiscreteTrainer,
    AbstractFlowTrainer as AbstractFlowTrainer,
    AbstractTrainer as AbstractTrainer,
    GradientDescent as GradientDescent,
    GradientFlow as GradientFlow,
    HeavyBall as HeavyBall,
    InertialFlow as InertialFlow,
    Nesterov as Nesterov,
    Optax as Optax,
    stability_limit as stability_limit,
    stability_ratio as stability_ratio,
)

__version__ = importlib.metadata.version("dipflow")


# `dipflow.verify` builds its tables with pandas: it is imported on first use,
# so that `import dipflow` imports neither pandas nor matplotlib.
_LAZY_SUBMODULES = ("verify",)


def __getattr__(name: str):
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY_SUBMODULES})
