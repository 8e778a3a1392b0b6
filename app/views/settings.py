"""Settings: the Label Studio connection, the model and its K, training and thresholds."""

from __future__ import annotations

import common
import streamlit as st

from almdn import workflow
from almdn.projects import jobs
from almdn.display import labeling_status as labeling
from almdn.acquisition.aggregation import AGGREGATIONS
from almdn.user_errors import USER_ERRORS
from almdn.models.pretrained import TORCHVISION_COCO_WEIGHTS
from almdn.registry import (
    ARCHITECTURES, AUGMENT_POLICIES, CLASS_LOSSES, DEFAULT_AUGMENT, DEFAULT_OPTIMIZER, LABEL_STUDIO_PORT, MAX_COMPONENTS,
    MIN_COMPONENTS, OPTIMIZERS, ROUND_ARCH_NAMES, ROUND_HEAD_TYPES,
)
from almdn.projects.rounds import MAX_IMAGE_SIZE, START_CHOICES, RoundSettings

st.title("Settings")
store = common.store()
project = common.project_dir()

# ----------------------------------------------------------------- Label Studio
st.subheader("Label Studio")
status = labeling.server_status(project)
if status.reachable:
    st.success(f"Connected to {'the local ' if status.local else ''}Label Studio at {status.url}.")
elif status.problem:
    st.warning(status.sentence(on_settings_page=True))
common.label_studio_login(status, key="settings-login")

left, right = st.columns(2)
with left.form("connect"):
    st.markdown("**Connect to a Label Studio server**")
    url = st.text_input("URL", value=status.url if status.connected and not status.local else "", placeholder="https://label-studio.example.org")
    token = st.text_input("API token", type="password", help="Your account's access token (Account & Settings in Label Studio). Stored in the project folder, readable only by you.")
    if st.form_submit_button("Connect"):
        if not url.strip() or not token.strip():
            st.error("Give both the server's URL and your API token.")
        else:
            with common.sentence_on_error():
                workflow.connect_label_studio(project, url.strip(), token.strip())
                st.success(f"Connected to {url.strip()}; the token is stored in the project folder (mode 0600).")
with right:
    st.markdown("**Or run one on this machine**")
    local = labeling.local_server_running(project)
    running = jobs.active_job(project)
    if local["running"]:
        # Starting is idempotent: while the project's server runs there is nothing to start.
        st.caption(f"This project's Label Studio runs at {local['url']} (process {local['pid']}).")
    port = st.number_input("Port (on 127.0.0.1)", min_value=1024, max_value=65535, value=LABEL_STUDIO_PORT, key="ls_port", disabled=bool(local["running"]))
    if st.button("Start a local Label Studio", icon=":material/play_arrow:", disabled=running is not None or bool(local["running"]),
                 help="It already runs." if local["running"] else None):
        try:
            if workflow.start_label_studio_job(project, int(port)) is None:
                st.info("The local Label Studio already runs; the project is connected to it.")
            else:
                st.rerun()
        except USER_ERRORS as exc:
            st.warning(str(exc))
    if local["running"] and st.button("Stop the local Label Studio", icon=":material/stop:"):
        with common.sentence_on_error():
            stopped = workflow.stop_label_studio(project)
            st.info("Label Studio stopped." if stopped else "The local Label Studio was not running.")
    common.job_panel(kinds=("label_studio",), show_loss=False, key="ls")

# ----------------------------------------------------------------- model and thresholds
st.subheader("Model, training and thresholds")
current = RoundSettings.load(store)
with st.form("model"):
    c1, c2, c3 = st.columns(3)
    arch = c1.selectbox("Architecture", ROUND_ARCH_NAMES, index=ROUND_ARCH_NAMES.index(current.arch) if current.arch in ROUND_ARCH_NAMES else 0,
                        help="; ".join(f"{name}: {ARCHITECTURES[name]}" for name in ROUND_ARCH_NAMES) + ".")
    head = c2.selectbox("Mixture head", ROUND_HEAD_TYPES, index=ROUND_HEAD_TYPES.index(current.head) if current.head in ROUND_HEAD_TYPES else 0,
                        help="gmm: the paper's head (Fig. 2a); eff: its efficient variant without class variances (Fig. 2b).")
    k = c3.number_input("K (mixture components)", min_value=MIN_COMPONENTS, max_value=MAX_COMPONENTS, value=int(current.num_components))
    c4, c5, c6 = st.columns(3)
    iterations = c4.number_input("Iterations per retrain", min_value=1, max_value=1_000_000, value=int(current.iterations))
    batch_size = c5.number_input("Batch size", min_value=1, max_value=1024, value=int(current.batch_size))
    lr = c6.number_input("Learning rate", min_value=1e-6, max_value=1.0, value=float(current.lr), format="%.4f")
    c7, c8, c9 = st.columns(3)
    conf = c7.slider("Confidence threshold for scoring", 0.0, 0.99, float(current.conf_threshold), 0.01,
                     help="Detections with at least this score count for an image's uncertainty (Sec. 3.3).")
    low = c7.slider("Low threshold (entropy_weighted)", 0.0, 0.99, float(current.low_threshold), 0.01,
                    help="Detections with at least this score count, each weighted by its score, for the entropy_weighted "
                         "acquisition (the default), so images without a sure detection are ranked too.")
    aggregations = list(AGGREGATIONS)
    aggregation = c8.selectbox("Aggregation (Tab. 2)", aggregations, index=aggregations.index(current.aggregation) if current.aggregation in aggregations else 0)
    starts = list(START_CHOICES)
    start_from = c9.selectbox("Each retrain starts from", starts, index=starts.index(current.start_from), format_func=START_CHOICES.get,
                              help="The initial weights: every version is trained the same way from the same start, as the paper retrains each "
                                   "cycle, so two versions' mAP differ by the labels added. Fine-tuning the previous version is cheaper, but its "
                                   "mAP mixes more training with the new labels.")
    c10, c11, c12 = st.columns(3)
    cls_loss = c10.selectbox("Class loss", CLASS_LOSSES, index=CLASS_LOSSES.index(current.cls_loss) if current.cls_loss in CLASS_LOSSES else 0,
                             help="type2: the mixture likelihood of the true class, which keeps the class mixture from collapsing to one "
                                  "component; eq5: the paper's Eq. 5 (pi-weighted cross-entropies).")
    optimizer = c11.selectbox("Optimizer", OPTIMIZERS, index=OPTIMIZERS.index(current.optimizer if current.optimizer in OPTIMIZERS else DEFAULT_OPTIMIZER))
    augment = c12.selectbox("Augmentation", AUGMENT_POLICIES,
                            index=AUGMENT_POLICIES.index(current.augment if current.augment in AUGMENT_POLICIES else DEFAULT_AUGMENT),
                            help="auto: SSD's recipe (photometric distortion, zoom-out, IoU crop, flip); none switches it off.")
    hflip = st.toggle("Flip images horizontally while training", value=bool(current.hflip),
                      help="Off for classes a mirror changes (digits, text, left/right signs).")
    # Small objects: what the coverage warning (project creation, a round) asks to change.
    c13, c14 = st.columns(2)
    image_size = c13.number_input("Input image size (px; 0: the architecture's own)", min_value=0, max_value=MAX_IMAGE_SIZE, step=32,
                                  value=int(current.image_size or 0),
                                  help="The side images are resized to. Larger gives small objects more pixels and a finer anchor grid, "
                                       "at a higher cost per image (ssd300_vgg16 is fixed at 300).")
    fit_anchors = c14.toggle("Fit anchors to the labeled boxes", value=bool(current.fit_anchors),
                             help="Each retrain fits the anchor scales and aspect ratios to the labeled boxes (as YOLO's autoanchor), "
                                  "for objects much smaller or more elongated than the architecture's anchors.")
    init = st.text_input("Models start from", value=current.init,
                         help="imagenet: an ImageNet backbone (where the architecture has one); coco: torchvision's COCO-trained detector "
                              f"(its classes mapped to yours; {', '.join(TORCHVISION_COCO_WEIGHTS)}); none: random; "
                              "or the path of a torchvision state dict of the same architecture.")
    if st.form_submit_button("Save", type="primary"):
        with common.sentence_on_error():
            current.replace(arch=arch, head=head, num_components=int(k), iterations=int(iterations), batch_size=int(batch_size), lr=float(lr),
                            conf_threshold=float(conf), low_threshold=float(low), aggregation=aggregation, start_from=start_from, cls_loss=cls_loss,
                            optimizer=optimizer, augment=augment, hflip=bool(hflip), init=init.strip(),
                            image_size=int(image_size) or None, fit_anchors=bool(fit_anchors)).save(store)
            st.success("Saved; the next retrain uses these settings.")
            # the labeled boxes checked for the saved settings: the user sees at once whether they helped
            common.show_warnings([workflow.anchor_coverage_warning(store)])
