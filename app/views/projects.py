"""Projects: open another project, create one from a COCO / VOC / YOLO dataset or a folder of
images, or add more images to the open one."""

from __future__ import annotations

from pathlib import Path

import common
import streamlit as st
from presentation import as_text

from almdn.projects.sources import SOURCE_KINDS
from almdn.workflow import add_sources, create_project
from almdn.projects.store import STORE_FILE

KIND_LABELS = {"coco": "COCO (json file, or folder with annotations/train.json)", "voc": "Pascal VOC (year folder)",
               "yolo": "YOLO (folder with images/, labels/, data.yaml)", "images": "a folder of unlabeled images"}
PATH_EXAMPLES = {"coco": "/data/coco-dataset (or /data/coco-dataset/annotations/train.json)", "voc": "/data/VOCdevkit/VOC2007",
                 "yolo": "/data/yolo-dataset", "images": "/data/unlabeled-images"}
SPLIT_LABELS = {None: "as the dataset says (annotated: labeled set; images: pool)", "labeled": "the labeled set (boxes kept)",
                "pool": "the pool (unlabeled; boxes dropped)", "test": "the test split (boxes kept)"}

st.title("Projects")
current = common.project_dir()
root = common.projects_root()
st.caption(f"Open project: {current}" + ("" if common.has_store(current) else " (not created yet)") + f" · projects folder: {root}")

known = sorted({p.parent for p in root.glob(f"*/{STORE_FILE}")} | ({current} if common.has_store(current) else set()))
st.subheader("Open a project")
if known:
    c1, c2 = st.columns([4, 1])
    choice = c1.selectbox("Project", known, index=known.index(current) if current in known else 0, format_func=lambda p: f"{p.name} ({p})")
    if c2.button("Open", key="open-known", disabled=choice == current):
        common.open_project(choice)
        st.rerun()
with st.form("open-path"):
    path = st.text_input("Or a project folder", placeholder="/path/to/project")
    if st.form_submit_button("Open folder"):
        folder = Path(path.strip()).expanduser()
        if not (folder / STORE_FILE).exists():
            st.error(as_text(f"'{folder}' holds no almdn project ({STORE_FILE}); create one below."))
        else:
            common.open_project(folder)
            st.rerun()

st.subheader("Create a project")
# The source is chosen outside the form: the path's example follows it at once.
kind = st.selectbox("Source", SOURCE_KINDS, format_func=KIND_LABELS.get, key="create-kind")
with st.form("create"):
    c1, c2 = st.columns(2)
    name = c1.text_input("Name", placeholder="my-project", help=f"The project folder is created under {root}.")
    source = c2.text_input("Dataset path", placeholder=PATH_EXAMPLES[kind])
    c3, c4 = st.columns(2)
    split = c3.selectbox("Put its images into", list(SPLIT_LABELS), format_func=SPLIT_LABELS.get)
    classes = c4.text_input("Classes (comma-separated, for a folder of images)", placeholder="cat, dog")
    if st.form_submit_button("Create", type="primary"):
        folder = root / name.strip()
        if not name.strip() or "/" in name or name.strip().startswith("."):
            st.error("Give the project a simple name (letters, digits, dashes), no slashes.")
        elif (folder / STORE_FILE).exists():
            st.error(as_text(f"A project called '{name.strip()}' exists already; open it above or choose another name."))
        elif not Path(source.strip()).expanduser().exists():
            st.error(as_text(f"'{source.strip()}' does not exist; give the path of the dataset on this machine."))
        else:
            # A project that could not be filled is not left behind half-made (create_project).
            # The labeled boxes are checked for the rounds' model: a small-object warning shows below.
            warnings: list[str] = []
            with common.sentence_on_error(), st.spinner("Reading the dataset (every file is checked and hashed)..."):
                store, summaries = create_project(folder, [(kind, Path(source.strip()).expanduser(), split)],
                                                  classes=[c.strip() for c in classes.split(",") if c.strip()] or None, name=name.strip(),
                                                  on_warning=warnings.append)
                store.close()
                common.open_project(folder)
                st.success(as_text(" ".join(str(s) for s in summaries) + " Train its first model on the Train page."))
                common.show_warnings(warnings)

if common.has_store(current):
    st.subheader(as_text(f"Add images to '{common.store().name}'"))
    with st.form("add"):
        c1, c2, c3 = st.columns([2, 3, 2])
        kind = c1.selectbox("Source", SOURCE_KINDS, index=SOURCE_KINDS.index("images"), format_func=KIND_LABELS.get, key="add-kind")
        source = c2.text_input("Path", key="add-path")
        split = c3.selectbox("Into", list(SPLIT_LABELS), format_func=SPLIT_LABELS.get, key="add-split")
        if st.form_submit_button("Add"):
            if not Path(source.strip()).expanduser().exists():
                st.error(as_text(f"'{source.strip()}' does not exist; give the path of the images on this machine."))
            else:
                warnings = []
                with common.sentence_on_error(), st.spinner("Adding images..."):
                    summaries = add_sources(common.store(), [(kind, Path(source.strip()).expanduser(), split)], on_warning=warnings.append)
                    st.success(as_text(" ".join(str(s) for s in summaries) + " New pool images are ranked after the next retrain."))
                    common.show_warnings(warnings)
