"""Deep Image Prior on images: test images, image metrics, fitting a generator
to an image and stopping rules.

May import: `dipflow.training` and the layers below it; not `dipflow.studies`."""
