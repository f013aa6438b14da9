"""MediaPipe on a real photograph (skimage's astronaut): landmarks found, sides right, metric size."""
import numpy as np
import pytest
from skimage import data

from lam_capture.estimator import EstimatorConfig, PoseEstimator
from lam_capture.skeleton import BODY, LEFT_HAND, RIGHT_HAND

ARM = ["left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist"]


@pytest.fixture(scope="module")
def photo():
    return data.astronaut()  # (512, 512, 3) RGB, a real photograph of a person


@pytest.fixture(scope="module")
def estimate(photo):
    est = PoseEstimator(EstimatorConfig(static_image_mode=True))
    try:
        yield est.estimate(photo, stamp=1.0)
    finally:
        est.close()


def test_arm_landmarks_found_with_sides_right(estimate):
    assert estimate is not None, "no person found in the astronaut photograph"
    kp, xy = estimate.keypoints, estimate.image_xy
    for name in ARM:
        i = BODY.index(name)
        assert np.all(np.isfinite(kp.points[i])) and np.all((xy[i] > -0.05) & (xy[i] < 1.05)), name
    # Unmirrored photo: the operator's left appears on the image's right.
    assert xy[BODY.index("left_shoulder"), 0] > xy[BODY.index("right_shoulder"), 0] + 0.2
    assert kp.point("left_shoulder")[0] > 0.05 and kp.point("right_shoulder")[0] < -0.05
    assert kp.point("left_elbow")[0] > 0 > kp.point("right_elbow")[0]
    # Her right hand (glove) is at the bottom left of the picture.
    rw = xy[BODY.index("right_wrist")]
    assert rw[0] < 0.4 and rw[1] > 0.8
    # Body frame: y up, shoulders above elbows above wrists, all above the hips (origin).
    for side in ("left", "right"):
        s, e, w = (kp.point(f"{side}_{j}")[1] for j in ("shoulder", "elbow", "wrist"))
        assert s > e > w > 0
    assert kp.confidence[BODY.index("left_shoulder")] > 0.9 and kp.confidence[BODY.index("right_shoulder")] > 0.9


def test_shoulder_width_is_metric(estimate):
    width = np.linalg.norm(estimate.keypoints.point("left_shoulder") - estimate.keypoints.point("right_shoulder"))
    assert 0.25 <= width <= 0.5


def test_mirrored_parameter_restores_the_operators_sides(photo, estimate):
    """A selfie camera shows the operator's mirror image: only the parameter can tell."""
    flipped = np.ascontiguousarray(photo[:, ::-1])
    truth_xy = estimate.image_xy  # her landmarks in the unmirrored photo
    idx = [BODY.index(n) for n in ARM]
    for mirrored in (True, False):
        est = PoseEstimator(EstimatorConfig(static_image_mode=True, mirrored=mirrored))
        try:
            got = est.estimate(flipped, stamp=1.0)
        finally:
            est.close()
        ls = BODY.index("left_shoulder")
        # image_xy is reported in unmirrored image coordinates when mirrored=True.
        x_seen = got.image_xy[ls, 0] if mirrored else 1 - got.image_xy[ls, 0]
        if mirrored:
            assert abs(x_seen - truth_xy[ls, 0]) < 0.05, "left shoulder is not her left shoulder"
            assert got.keypoints.point("left_shoulder")[0] > 0.05
            sure = [i for i in idx if min(got.keypoints.confidence[i], estimate.keypoints.confidence[i]) > 0.5]
            assert len(sure) >= 3  # same body as unmirrored, where both runs are confident
            assert np.max(np.linalg.norm(got.keypoints.points[sure] - estimate.keypoints.points[sure], axis=1)) < 0.1
        else:  # taken as unmirrored, the label lands on her right shoulder: the parameter matters
            rs = BODY.index("right_shoulder")
            assert abs(x_seen - truth_xy[rs, 0]) < 0.05


def test_hands_are_assigned_by_the_pose_wrists():
    """Hand blocks follow the wrist each hand is at; the label only breaks ties."""
    est = PoseEstimator.__new__(PoseEstimator)
    est.config = EstimatorConfig()
    image_xy = np.full((len(BODY.names), 2), np.nan)
    image_xy[15], image_xy[16] = (0.7, 0.6), (0.3, 0.6)  # left wrist on the image's right
    near_left = (np.tile([0.71, 0.58], (21, 1)), np.zeros((21, 3)), "Left", 0.9)
    near_right = (np.tile([0.29, 0.61], (21, 1)), np.zeros((21, 3)), "Left", 0.8)
    blocks = {b: w for b, w, *_ in est._assign([near_left, near_right], image_xy)}
    assert blocks == {LEFT_HAND: 15, RIGHT_HAND: 16}
    image_xy[15] = image_xy[16] = (0.5, 0.6)  # wrists together: MediaPipe's label decides
    tie = (np.tile([0.5, 0.6], (21, 1)), np.zeros((21, 3)), "Left", 0.9)  # 'Left' assumes a mirror
    assert [b for b, *_ in est._assign([tie], image_xy)] == [RIGHT_HAND]


def test_no_person_and_bad_images():
    est = PoseEstimator(EstimatorConfig(static_image_mode=True, hands=False))
    try:
        assert est.estimate(np.full((480, 640, 3), 127, np.uint8), 0.0) is None
        with pytest.raises(ValueError, match="RGB uint8"):
            est.estimate(np.zeros((480, 640), np.uint8), 0.0)
        with pytest.raises(ValueError, match="RGB uint8"):
            est.estimate(np.zeros((480, 640, 3), np.float32), 0.0)
    finally:
        est.close()


@pytest.mark.parametrize("field, value", [("model_complexity", 2), ("min_detection_confidence", 1.5),
                                          ("hands", None)])
def test_estimator_config_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=field):
        EstimatorConfig(**{field: value})
