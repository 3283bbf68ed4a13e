//! Scenes: a grid of cells, at most one solid-coloured shape per cell, rendered to RGB.
//!
//! One cell is one patch of the tiny VLM (16 px by default), which is what makes perception
//! learnable on a CPU in minutes: each patch embedding sees exactly one object or nothing.

use image::{Rgb, RgbImage};
use rand::seq::SliceRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Shape {
    Circle,
    Square,
    Triangle,
    Diamond,
}

impl Shape {
    pub const ALL: [Shape; 4] = [
        Shape::Circle,
        Shape::Square,
        Shape::Triangle,
        Shape::Diamond,
    ];

    pub fn word(self) -> &'static str {
        match self {
            Shape::Circle => "circle",
            Shape::Square => "square",
            Shape::Triangle => "triangle",
            Shape::Diamond => "diamond",
        }
    }

    pub fn plural(self) -> &'static str {
        match self {
            Shape::Circle => "circles",
            Shape::Square => "squares",
            Shape::Triangle => "triangles",
            Shape::Diamond => "diamonds",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Colour {
    Red,
    Green,
    Blue,
    Yellow,
    Purple,
}

impl Colour {
    pub const ALL: [Colour; 5] = [
        Colour::Red,
        Colour::Green,
        Colour::Blue,
        Colour::Yellow,
        Colour::Purple,
    ];

    pub fn word(self) -> &'static str {
        match self {
            Colour::Red => "red",
            Colour::Green => "green",
            Colour::Blue => "blue",
            Colour::Yellow => "yellow",
            Colour::Purple => "purple",
        }
    }

    /// Saturated and far apart in RGB so that a mean-pooled patch still tells them apart.
    pub fn rgb(self) -> [u8; 3] {
        match self {
            Colour::Red => [220, 30, 30],
            Colour::Green => [30, 170, 50],
            Colour::Blue => [40, 70, 230],
            Colour::Yellow => [240, 210, 20],
            Colour::Purple => [150, 40, 190],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Size {
    Small,
    Large,
}

impl Size {
    pub fn word(self) -> &'static str {
        match self {
            Size::Small => "small",
            Size::Large => "large",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Object {
    pub shape: Shape,
    pub colour: Colour,
    pub size: Size,
    /// 0-based grid cell.
    pub row: u32,
    pub col: u32,
}

impl Object {
    /// "red circle": the form used in answers, `objects` and `key_words`.
    pub fn name(&self) -> String {
        format!("{} {}", self.colour.word(), self.shape.word())
    }
}

/// Grid geometry. The image is `cols·cell × rows·cell` pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SceneConfig {
    pub rows: u32,
    pub cols: u32,
    pub cell: u32,
}

impl Default for SceneConfig {
    fn default() -> Self {
        SceneConfig {
            rows: 3,
            cols: 3,
            cell: 16,
        }
    }
}

/// A scene: objects in row-major order, each (colour, shape) pair at most once so that every
/// object can be named unambiguously by its colour and shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scene {
    pub objects: Vec<Object>,
}

impl Scene {
    /// Draws `count` objects with colours and shapes from the palettes' prefixes, in distinct
    /// cells. `count` is clamped to what the grid and the palettes can hold.
    pub fn random<R: Rng>(
        rng: &mut R,
        cfg: &SceneConfig,
        count: usize,
        colours: &[Colour],
        shapes: &[Shape],
    ) -> Scene {
        let cells = (cfg.rows * cfg.cols) as usize;
        let count = count.min(cells).min(colours.len() * shapes.len());
        let mut pairs: Vec<(Colour, Shape)> = colours
            .iter()
            .flat_map(|&c| shapes.iter().map(move |&s| (c, s)))
            .collect();
        pairs.shuffle(rng);
        let mut slots: Vec<u32> = (0..cells as u32).collect();
        slots.shuffle(rng);
        let mut objects: Vec<Object> = pairs
            .into_iter()
            .zip(slots)
            .take(count)
            .map(|((colour, shape), slot)| Object {
                shape,
                colour,
                size: if rng.random_bool(0.5) {
                    Size::Large
                } else {
                    Size::Small
                },
                row: slot / cfg.cols,
                col: slot % cfg.cols,
            })
            .collect();
        objects.sort_by_key(|o| (o.row, o.col));
        Scene { objects }
    }

    pub fn names(&self) -> Vec<String> {
        self.objects.iter().map(Object::name).collect()
    }

    pub fn count_colour(&self, c: Colour) -> usize {
        self.objects.iter().filter(|o| o.colour == c).count()
    }

    pub fn count_shape(&self, s: Shape) -> usize {
        self.objects.iter().filter(|o| o.shape == s).count()
    }

    pub fn find(&self, c: Colour, s: Shape) -> Option<&Object> {
        self.objects.iter().find(|o| o.colour == c && o.shape == s)
    }

    pub fn render(&self, cfg: &SceneConfig) -> RgbImage {
        let mut img = RgbImage::from_pixel(cfg.cols * cfg.cell, cfg.rows * cfg.cell, BACKGROUND);
        for o in &self.objects {
            draw_object(&mut img, cfg.cell, o);
        }
        img
    }
}

pub const BACKGROUND: Rgb<u8> = Rgb([245, 245, 245]);

/// Rasterises by testing each pixel centre against the shape, in cell-local coordinates
/// centred on the cell; no anti-aliasing, so colours stay exact.
fn draw_object(img: &mut RgbImage, cell: u32, o: &Object) {
    let c = cell as f32;
    // Radius as a fraction of the cell: large nearly fills it, small is clearly smaller.
    let r = match o.size {
        Size::Large => 0.44 * c,
        Size::Small => 0.25 * c,
    };
    let colour = Rgb(o.colour.rgb());
    for y in 0..cell {
        for x in 0..cell {
            let dx = x as f32 + 0.5 - c / 2.0;
            let dy = y as f32 + 0.5 - c / 2.0;
            let inside = match o.shape {
                Shape::Circle => dx * dx + dy * dy <= r * r,
                Shape::Square => dx.abs() <= r * 0.85 && dy.abs() <= r * 0.85,
                Shape::Diamond => dx.abs() + dy.abs() <= r,
                // Apex up, base at +r·0.8; half-width grows linearly from apex to base.
                Shape::Triangle => {
                    let top = -r;
                    let bottom = r * 0.8;
                    dy >= top && dy <= bottom && dx.abs() <= (dy - top) / (bottom - top) * r
                }
            };
            if inside {
                img.put_pixel(o.col * cell + x, o.row * cell + y, colour);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn objects_are_unique_pairs_in_distinct_cells() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let cfg = SceneConfig::default();
        for _ in 0..50 {
            let s = Scene::random(&mut rng, &cfg, 8, &Colour::ALL, &Shape::ALL);
            assert_eq!(s.objects.len(), 8);
            let mut cells: Vec<_> = s.objects.iter().map(|o| (o.row, o.col)).collect();
            cells.dedup();
            assert_eq!(cells.len(), 8);
            let mut names = s.names();
            names.sort();
            names.dedup();
            assert_eq!(names.len(), 8);
        }
    }

    #[test]
    fn render_paints_object_colour_at_cell_centre_only() {
        let cfg = SceneConfig::default();
        let scene = Scene {
            objects: vec![Object {
                shape: Shape::Square,
                colour: Colour::Blue,
                size: Size::Small,
                row: 1,
                col: 2,
            }],
        };
        let img = scene.render(&cfg);
        assert_eq!(img.dimensions(), (48, 48));
        assert_eq!(img.get_pixel(2 * 16 + 8, 16 + 8).0, Colour::Blue.rgb());
        assert_eq!(*img.get_pixel(8, 8), BACKGROUND);
        // Small square half-side 0.25·16·0.85 = 3.4 px: the cell corner stays background.
        assert_eq!(*img.get_pixel(2 * 16, 16), BACKGROUND);
        let painted = img.pixels().filter(|p| **p != BACKGROUND).count();
        // |dx| ≤ 3.4 with dx ∈ {±0.5, …, ±3.5} → 6 columns × 6 rows = 36 pixels.
        assert_eq!(painted, 36);
    }
}
