"""Commands: export (TF Serving SavedModel), predict (segment DICOM/PNG/TIFF/.npz inputs)."""

import click

from kerasseg.errors import KerassegError

#: the TTA modes of kerasseg.models.ensemble.TTA_MODES (spelled out so `--help` does not import TensorFlow;
#: tests/test_export_predict.py checks they agree)
TTA_CHOICES = ("none", "flips", "dihedral")


@click.command(name="export", short_help="SavedModel for TF Serving (model or CV ensemble).")
@click.argument("source", type=click.Path(path_type=str))
@click.option("--out", "out", required=True, type=click.Path(path_type=str),
              help="Model base folder BASE/NAME; the export goes to BASE/NAME/<version>/.")
@click.option("--version", "version", type=int, default=None,
              help="Version number (default: highest existing + 1).")
@click.option("--force", is_flag=True, help="Overwrite an existing version.")
@click.option("--tta", type=click.Choice(TTA_CHOICES), default="none", show_default=True,
              help="Test-time augmentation in the graph: none, flips (4) or dihedral (8 symmetries).")
def export_cmd(source, out, version, force, tta):
    """Export RUN_DIR, MODEL.keras or a FOLDS_DIR (one SavedModel with every fold, the TTA and the cv's
    post-processing) for TF Serving (signatures serving_default, serving_4d, serving_bytes)."""
    from kerasseg.export import export_model

    path = export_model(source, out, version=version, force=force, tta=tta)
    click.echo(f"exported {source} -> {path}")


@click.command(name="predict", short_help="Segment DICOM/PNG/TIFF images or .npz ROIs.")
@click.argument("model", type=click.Path(path_type=str))
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--roi", "roi", multiple=True,
              help="ROI box x0,y0,x1,y1 in pixels (x = column, x1/y1 exclusive); repeat for several boxes.")
@click.option("--mask-hint", "mask_hint", default=None, type=click.Path(path_type=str),
              help="Mask image whose non-zero bounding box is the ROI.")
@click.option("--out", "out", default="predictions", show_default=True, type=click.Path(path_type=str),
              help="Output folder for masks, uncertainty maps, overlays and JSON.")
@click.option("--tta", type=click.Choice(TTA_CHOICES), default="none", show_default=True,
              help="Test-time augmentation: none, flips (4) or dihedral (8); not for an export (built in).")
@click.option("--dicom-seg", "dicom_seg", is_flag=True,
              help="For DICOM inputs also write <stem>.seg.dcm (DICOM Segmentation) and <stem>.sr.dcm "
                   "(TID 1500 measurements, one mass per box); needs --roi or --mask-hint.")
@click.option("--probability", is_flag=True,
              help="With --dicom-seg: a FRACTIONAL probability SEG instead of a BINARY mask.")
def predict_cmd(model, inputs, roi, mask_hint, out, tta, dicom_seg, probability):
    """Segment INPUT... (DICOM, PNG/TIFF or .npz) with MODEL (run dir, .keras, folds dir or TF Serving export).

    Outputs are named after each input's file stem; inputs of one call that share a stem get
    <stem>-2, <stem>-3, ... in input order, so none replaces another's results."""
    from kerasseg.export.predict import predict_inputs
    from kerasseg.export.roi_input import parse_roi

    if roi and mask_hint is not None:
        raise KerassegError("give either --roi or --mask-hint, not both")
    if dicom_seg and not roi and mask_hint is None:
        raise click.UsageError("--dicom-seg needs --roi or --mask-hint (the SEG and SR report the masses of the boxes)")
    if probability and not dicom_seg:
        raise click.UsageError("--probability applies with --dicom-seg (a FRACTIONAL probability SEG)")
    boxes = [parse_roi(text) for text in roi] if roi else None

    def report(path, info, error):
        if error is not None:
            click.echo(f"Error: {error}", err=True)
        elif "rois" in info:
            click.echo(f"{path}: {info['n']} ROIs -> {info['predictions']}")
        else:
            mm = f", {info['area_mm2']:.1f} mm^2" if info.get("area_mm2") is not None else ""
            click.echo(f"{path}: mass area {info['area_px']} px{mm} -> {info['mask']}")
            if info.get("seg"):
                sr = f", SR -> {info['sr']}" if info.get("sr") else ""
                click.echo(f"{path}: DICOM SEG ({info['seg_type']}) -> {info['seg']}{sr}")
            for note in info.get("notes") or ():
                click.echo(f"Note: {note}")

    results, failures = predict_inputs(model, inputs, out, roi=boxes, mask_hint=mask_hint,
                                       on_result=report, progress=len(inputs) > 1, tta=tta,
                                       dicom_seg=dicom_seg, probability=probability)
    if failures:
        raise KerassegError(f"{len(failures)} of {len(inputs)} input(s) failed")


COMMANDS = [export_cmd, predict_cmd]
