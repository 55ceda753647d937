//! Stage 1, validate: a request whose inputs do not match the tensors its route declares is
//! refused before it takes a place or runs a plugin.

use super::context::Ctx;
use super::error::ServeError;
use crate::config::TensorDecl;
use crate::tensor::Tensor;

/// Refuses a request whose inputs break its route's declared `inputs`.
pub(super) fn validate(ctx: &Ctx<'_>) -> Result<(), ServeError> {
    check_declared_inputs(&ctx.route.settings.inputs, &ctx.inputs).map_err(ServeError::BadRequest)
}

/// Checks a request's inputs against the tensors its route declares (none declared: any).
fn check_declared_inputs(declared: &[TensorDecl], inputs: &[(String, Tensor)]) -> Result<(), String> {
    if declared.is_empty() {
        return Ok(());
    }
    let names = || declared.iter().map(|d| d.name.as_str()).collect::<Vec<_>>().join(", ");
    if inputs.len() != declared.len() {
        return Err(format!(
            "inputs: expected {} tensors ({}), got {}",
            declared.len(),
            names(),
            inputs.len()
        ));
    }
    for (i, (name, t)) in inputs.iter().enumerate() {
        let Some(d) = declared.iter().find(|d| d.name == *name) else {
            return Err(format!("inputs[{i}].name: unknown input `{name}`; this route takes {}", names()));
        };
        // As many tensors as declared, each declared: a repeated name leaves another out.
        if inputs[..i].iter().any(|(earlier, _)| earlier == name) {
            return Err(format!("inputs[{i}].name: `{name}` given twice; this route takes {}", names()));
        }
        if t.dtype() != d.dtype {
            return Err(format!(
                "inputs[{i}].datatype: `{name}` must be {}, got {}",
                d.dtype.kserve_name(),
                t.dtype().kserve_name()
            ));
        }
        if !d.accepts_shape(t.shape()) {
            return Err(format!(
                "inputs[{i}].shape: `{name}` must be shaped {:?} (-1: any), got {:?}",
                d.kserve_shape(),
                t.shape()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(data: Vec<u8>) -> Tensor {
        Tensor::from_u8(vec![data.len()], data).unwrap()
    }

    #[test]
    fn declared_inputs_are_checked_by_name_type_and_shape() {
        let declared = vec![TensorDecl {
            name: "image".into(),
            dtype: crate::tensor::DType::U8,
            shape: vec![None, Some(28)],
        }];
        let image = |shape: Vec<usize>| {
            let n = shape.iter().product();
            vec![("image".to_owned(), Tensor::from_u8(shape, vec![0; n]).unwrap())]
        };
        assert_eq!(check_declared_inputs(&declared, &image(vec![28, 28])), Ok(()));
        assert_eq!(check_declared_inputs(&declared, &image(vec![3, 28])), Ok(()));
        assert!(
            check_declared_inputs(&declared, &image(vec![28])).unwrap_err().starts_with("inputs[0].shape")
        );
        assert!(check_declared_inputs(&declared, &[]).unwrap_err().contains("expected 1 tensors (image)"));
        let f32 = vec![("image".to_owned(), Tensor::from_f32(vec![1, 28], &[0.0; 28]).unwrap())];
        assert!(check_declared_inputs(&declared, &f32).unwrap_err().contains("must be UINT8, got FP32"));
        let other = vec![("pixels".to_owned(), tensor(vec![0; 28]))];
        assert!(check_declared_inputs(&declared, &other).unwrap_err().contains("unknown input `pixels`"));
        assert_eq!(check_declared_inputs(&[], &other), Ok(()));
        let two = |a: &str, b: &str| {
            [a, b].map(|n| (n.to_owned(), Tensor::from_u8(vec![1, 28], vec![0; 28]).unwrap())).to_vec()
        };
        let mut pair = declared.clone();
        pair.push(TensorDecl { name: "mask".into(), ..declared[0].clone() });
        assert_eq!(check_declared_inputs(&pair, &two("image", "mask")), Ok(()));
        let twice = check_declared_inputs(&pair, &two("image", "image")).unwrap_err();
        assert!(twice.starts_with("inputs[1].name: `image` given twice"), "{twice}");
    }
}
