"""The bundled medical multiple-choice dataset: original questions written for this project.

Nothing here is copied from MedQA, USMLE, MMLU or any other question bank. The questions are generated
deterministically from a seed out of the small knowledge base below: each :class:`Relation` pairs
question templates with (subject, answer) facts of basic, well-established textbook medicine. A
question asks for one fact's answer; its four distractors are other answers of the same relation,
and the correct option's position is balanced so each letter A-E is right about equally often. The
facts are chosen so that, within a relation, every answer is wrong for every other subject: any
answer of a relation is a safe distractor for its other questions (also when ``data.option_count``
adds more of them).

The generated splits (about 70/15/15 of each relation's facts, so every relation appears in every
split) are stored in MedQA's JSONL schema in ``bundled/{train,validation,test}.jsonl``, with each
question's metadata (its relation) under ``meta_info``.

The ``ood`` split (``bundled/ood.jsonl``) is out of distribution the way MMLU-Pro health is for MedQA:
another question style and ten options (A-J). It asks about the held-out facts (those of the validation
and test splits; none is trained on) in the other direction, from the answer back to the subject, in
"Which of the following ..." form (:data:`OOD_TEMPLATES`): the options are drugs, diseases, nutrients,
functions... where the in-distribution splits offer classes, causes and treatments. Its nine distractors
are subjects of the same relation with a different answer, so the knowledge base's guarantee (any
answer of a relation is wrong for its other subjects) makes exactly one option right. Relations whose
subjects are clinical vignettes have no OOD template (a ten-vignette option list).

Regenerate every split with::

    PYTHONPATH=src python -m medrlvr.data.bundled
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from pathlib import Path

from medrlvr.data.medqa import load_medqa_jsonl, write_medqa_jsonl
from medrlvr.data.schema import OPTION_LETTERS, MCQExample

BUNDLED_DIR = Path(__file__).parent / "bundled"
SPLITS = ("train", "validation", "test")
OOD_SPLIT = "ood"
ALL_SPLITS = (*SPLITS, OOD_SPLIT)
SOURCE = "bundled"
OPTION_COUNT = 5
OOD_OPTION_COUNT = 10
HELD_OUT_FRACTION = 0.15


@dataclass(frozen=True)
class Relation:
    """Question templates (with a ``{subject}`` slot) and the (subject, answer) facts they ask about."""

    name: str
    templates: tuple[str, ...]
    facts: tuple[tuple[str, str], ...]

    def question(self, subject: str, rng: random.Random) -> str:
        """The question about ``subject``, in a template chosen with ``rng``."""
        return _capitalize(rng.choice(self.templates).format(subject=subject))

    def distractor_pool(self, answer: str) -> list[str]:
        """The relation's distinct answers other than ``answer`` (case-insensitive), in knowledge-base order."""
        banned = {answer.casefold()}
        pool: list[str] = []
        for _, candidate in self.facts:
            if candidate.casefold() not in banned:
                banned.add(candidate.casefold())
                pool.append(candidate)
        return pool

    def subjects_without(self, answer: str) -> list[str]:
        """The relation's subjects whose answer is not ``answer`` (case-insensitive), in knowledge-base order."""
        return [subject for subject, candidate in self.facts if candidate.casefold() != answer.casefold()]


def _capitalize(text: str) -> str:
    return text[0].upper() + text[1:]


CN_NAMES = {
    "I": "Olfactory nerve",
    "II": "Optic nerve",
    "III": "Oculomotor nerve",
    "IV": "Trochlear nerve",
    "V": "Trigeminal nerve",
    "VI": "Abducens nerve",
    "VII": "Facial nerve",
    "VIII": "Vestibulocochlear nerve",
    "IX": "Glossopharyngeal nerve",
    "X": "Vagus nerve",
    "XI": "Accessory nerve",
    "XII": "Hypoglossal nerve",
}


def _cn(number: str) -> str:
    """A cranial nerve's name with its number, e.g. ``Facial nerve (CN VII)``."""
    return f"{CN_NAMES[number]} (CN {number})"


LIVE = "Live attenuated vaccine"
INACTIVATED = "Inactivated (killed) whole-pathogen vaccine"
TOXOID = "Toxoid vaccine"
SUBUNIT = "Recombinant protein subunit vaccine"
CONJUGATE = "Polysaccharide-protein conjugate vaccine"

AD = "Autosomal dominant"
AR = "Autosomal recessive"
XR = "X-linked recessive"
XD = "X-linked dominant"
MITO = "Mitochondrial (maternal)"

RELATIONS: tuple[Relation, ...] = (
    Relation(
        "nutrient_deficiency",
        (
            "Deficiency of {subject} classically causes which condition?",
            "Which condition results from a lack of {subject}?",
        ),
        (
            ("vitamin C (ascorbic acid)", "Scurvy"),
            ("vitamin D in a growing child", "Rickets"),
            ("thiamine (vitamin B1)", "Beriberi"),
            ("niacin (vitamin B3)", "Pellagra"),
            ("riboflavin (vitamin B2)", "Cheilosis and corneal vascularization"),
            ("vitamin A", "Night blindness"),
            ("vitamin K", "Bleeding from reduced synthesis of clotting factors II, VII, IX and X"),
            ("vitamin B12 (cobalamin)", "Subacute combined degeneration of the spinal cord"),
            ("folate in early pregnancy", "Neural tube defects in the fetus"),
            ("iodine", "Goiter with hypothyroidism"),
            ("iron", "Microcytic hypochromic anemia"),
            ("zinc", "Periorificial dermatitis, hair loss and poor wound healing"),
            ("selenium", "Keshan disease (a cardiomyopathy)"),
            ("protein despite adequate total calories", "Kwashiorkor"),
            ("total dietary energy (both calories and protein)", "Marasmus"),
        ),
    ),
    Relation(
        "disease_organism",
        (
            "Which organism is the usual cause of {subject}?",
            "What is the usual causative agent of {subject}?",
            "{subject} is most commonly caused by which pathogen?",
        ),
        (
            ("tuberculosis", "Mycobacterium tuberculosis"),
            ("leprosy", "Mycobacterium leprae"),
            ("syphilis", "Treponema pallidum"),
            ("Lyme disease", "Borrelia burgdorferi"),
            ("gonorrhea", "Neisseria gonorrhoeae"),
            ("cholera", "Vibrio cholerae"),
            ("typhoid fever", "Salmonella enterica serotype Typhi"),
            ("tetanus", "Clostridium tetani"),
            ("botulism", "Clostridium botulinum"),
            ("gas gangrene", "Clostridium perfringens"),
            ("antibiotic-associated pseudomembranous colitis", "Clostridioides difficile"),
            ("diphtheria", "Corynebacterium diphtheriae"),
            ("whooping cough", "Bordetella pertussis"),
            ("anthrax", "Bacillus anthracis"),
            ("bubonic plague", "Yersinia pestis"),
            ("Rocky Mountain spotted fever", "Rickettsia rickettsii"),
            ("Legionnaires' disease", "Legionella pneumophila"),
            ("cat-scratch disease", "Bartonella henselae"),
            ("bullous impetigo", "Staphylococcus aureus"),
            ("scarlet fever", "Streptococcus pyogenes"),
            ("chronic antral gastritis with duodenal ulcers", "Helicobacter pylori"),
            ("hemolytic uremic syndrome after bloody diarrhea in a child", "Escherichia coli O157:H7"),
            ("cerebral malaria", "Plasmodium falciparum"),
            ("Chagas disease", "Trypanosoma cruzi"),
            ("amebic liver abscess", "Entamoeba histolytica"),
            ("oral thrush", "Candida albicans"),
            ("river blindness", "Onchocerca volvulus"),
            ("neurocysticercosis", "Taenia solium"),
            ("infectious mononucleosis", "Epstein-Barr virus"),
            ("Kaposi sarcoma", "Human herpesvirus 8"),
            ("erythema infectiosum (fifth disease)", "Parvovirus B19"),
            ("croup", "Parainfluenza virus"),
            ("bronchiolitis in infants", "Respiratory syncytial virus"),
            ("cervical cancer", "Human papillomavirus"),
        ),
    ),
    Relation(
        "drug_class",
        (
            "{subject} belongs to which drug class?",
            "What is the drug class of {subject}?",
            "Which class of medication includes {subject}?",
        ),
        (
            ("metoprolol", "Beta-adrenergic blocker"),
            ("propranolol", "Beta-adrenergic blocker"),
            ("lisinopril", "ACE inhibitor"),
            ("losartan", "Angiotensin II receptor blocker"),
            ("amlodipine", "Calcium channel blocker"),
            ("verapamil", "Calcium channel blocker"),
            ("furosemide", "Loop diuretic"),
            ("hydrochlorothiazide", "Thiazide diuretic"),
            ("atorvastatin", "HMG-CoA reductase inhibitor (statin)"),
            ("apixaban", "Direct factor Xa inhibitor"),
            ("dabigatran", "Direct thrombin inhibitor"),
            ("clopidogrel", "P2Y12 ADP receptor antagonist"),
            ("omeprazole", "Proton pump inhibitor"),
            ("famotidine", "H2 receptor antagonist"),
            ("metformin", "Biguanide"),
            ("glipizide", "Sulfonylurea"),
            ("sitagliptin", "DPP-4 inhibitor"),
            ("empagliflozin", "SGLT2 inhibitor"),
            ("liraglutide", "GLP-1 receptor agonist"),
            ("sertraline", "Selective serotonin reuptake inhibitor"),
            ("amitriptyline", "Tricyclic antidepressant"),
            ("haloperidol", "First-generation (typical) antipsychotic"),
            ("risperidone", "Second-generation (atypical) antipsychotic"),
            ("lorazepam", "Benzodiazepine"),
            ("celecoxib", "Selective COX-2 inhibitor"),
            ("amoxicillin", "Penicillin"),
            ("ceftriaxone", "Cephalosporin"),
            ("azithromycin", "Macrolide"),
            ("ciprofloxacin", "Fluoroquinolone"),
            ("gentamicin", "Aminoglycoside"),
            ("meropenem", "Carbapenem"),
            ("oseltamivir", "Neuraminidase inhibitor"),
            ("fluconazole", "Azole antifungal"),
            ("albuterol", "Short-acting beta-2 agonist"),
            ("montelukast", "Leukotriene receptor antagonist"),
            ("alendronate", "Bisphosphonate"),
            ("allopurinol", "Xanthine oxidase inhibitor"),
            ("ondansetron", "5-HT3 receptor antagonist"),
            ("tamsulosin", "Alpha-1 adrenergic blocker"),
            ("finasteride", "5-alpha-reductase inhibitor"),
            ("donepezil", "Acetylcholinesterase inhibitor"),
            ("sildenafil", "Phosphodiesterase-5 inhibitor"),
            ("tamoxifen", "Selective estrogen receptor modulator"),
            ("anastrozole", "Aromatase inhibitor"),
        ),
    ),
    Relation(
        "drug_mechanism",
        (
            "What is the mechanism of action of {subject}?",
            "Which statement best describes the mechanism of {subject}?",
        ),
        (
            ("proton pump inhibitors", "Irreversible inhibition of the parietal cell H+/K+ ATPase"),
            ("H2 receptor antagonists", "Competitive blockade of histamine H2 receptors on parietal cells"),
            ("statins", "Inhibition of HMG-CoA reductase"),
            ("ACE inhibitors", "Blocking conversion of angiotensin I to angiotensin II"),
            ("angiotensin II receptor blockers", "Blockade of angiotensin II type 1 (AT1) receptors"),
            ("loop diuretics", "Inhibition of the Na-K-2Cl cotransporter in the thick ascending limb"),
            ("thiazide diuretics", "Inhibition of the Na-Cl cotransporter in the distal convoluted tubule"),
            ("spironolactone", "Antagonism of aldosterone at mineralocorticoid receptors"),
            ("beta-lactam antibiotics", "Binding penicillin-binding proteins to block peptidoglycan cross-linking"),
            ("vancomycin", "Binding D-Ala-D-Ala ends of cell wall precursors to block peptidoglycan synthesis"),
            ("macrolides", "Binding the 50S ribosomal subunit to block translocation"),
            ("tetracyclines", "Binding the 30S ribosomal subunit to block aminoacyl-tRNA attachment"),
            ("fluoroquinolones", "Inhibition of bacterial DNA gyrase and topoisomerase IV"),
            ("trimethoprim", "Inhibition of bacterial dihydrofolate reductase"),
            ("rifampin", "Inhibition of bacterial DNA-dependent RNA polymerase"),
            ("isoniazid", "Inhibition of mycolic acid synthesis"),
            ("azole antifungals", "Inhibition of fungal ergosterol synthesis at 14-alpha-demethylase"),
            ("amphotericin B", "Binding ergosterol to form pores in fungal cell membranes"),
            ("acyclovir", "Inhibition of herpesvirus DNA polymerase after activation by viral thymidine kinase"),
            ("oseltamivir", "Inhibition of influenza neuraminidase, preventing release of new virions"),
            ("selective serotonin reuptake inhibitors", "Blocking presynaptic reuptake of serotonin"),
            ("benzodiazepines", "Increasing the frequency of GABA-A chloride channel opening"),
            ("opioid analgesics", "Agonism at mu-opioid receptors"),
            ("low-dose aspirin", "Irreversible acetylation of platelet cyclooxygenase"),
            ("clopidogrel", "Irreversible blockade of the platelet P2Y12 ADP receptor"),
            ("warfarin", "Inhibition of vitamin K epoxide reductase"),
            ("unfractionated heparin", "Potentiation of antithrombin"),
            ("metformin", "Reduction of hepatic gluconeogenesis"),
            ("sulfonylureas", "Closing beta-cell ATP-sensitive potassium channels to trigger insulin release"),
            ("digoxin", "Inhibition of the cardiac myocyte Na+/K+ ATPase"),
            ("allopurinol", "Inhibition of xanthine oxidase"),
            ("colchicine", "Binding tubulin to inhibit microtubule polymerization"),
            ("neostigmine", "Reversible inhibition of acetylcholinesterase"),
            ("atropine", "Competitive antagonism at muscarinic acetylcholine receptors"),
            ("lidocaine", "Blockade of voltage-gated sodium channels"),
            ("botulinum toxin", "Cleavage of SNARE proteins, blocking acetylcholine release"),
        ),
    ),
    Relation(
        "first_line_treatment",
        (
            "What is the first-line treatment for {subject}?",
            "Which therapy is the first choice for {subject}?",
        ),
        (
            ("anaphylaxis", "Intramuscular epinephrine"),
            ("absence seizures in a child", "Ethosuximide"),
            ("primary syphilis", "Intramuscular benzathine penicillin G"),
            ("hyperkalemia with ECG changes, to stabilize the cardiac membrane", "Intravenous calcium gluconate"),
            ("diabetic ketoacidosis", "Intravenous fluids with an insulin infusion"),
            ("primary hypothyroidism", "Levothyroxine"),
            ("primary adrenal insufficiency", "Hydrocortisone plus fludrocortisone"),
            ("disabling Parkinson disease in an older adult", "Levodopa with carbidopa"),
            ("type 2 diabetes without contraindications to it", "Metformin"),
            ("trigeminal neuralgia", "Carbamazepine"),
            ("convulsive status epilepticus", "Intravenous lorazepam"),
            ("tension pneumothorax", "Immediate needle decompression"),
            ("cardiac arrest with ventricular fibrillation", "Unsynchronized defibrillation"),
            ("an acute cluster headache attack", "High-flow 100% oxygen"),
            ("pernicious anemia", "Intramuscular vitamin B12"),
            ("hereditary hemochromatosis", "Serial phlebotomy"),
            ("scabies", "Topical permethrin"),
            ("erythema migrans of early Lyme disease in an adult", "Oral doxycycline"),
            ("Pneumocystis jirovecii pneumonia", "Trimethoprim-sulfamethoxazole"),
            ("active pulmonary tuberculosis", "Rifampin, isoniazid, pyrazinamide and ethambutol"),
            ("uncomplicated falciparum malaria", "Artemisinin-based combination therapy"),
            ("Clostridioides difficile colitis", "Oral vancomycin or fidaxomicin"),
            ("symptomatic myasthenia gravis", "Pyridostigmine"),
            ("Kawasaki disease", "Intravenous immunoglobulin with aspirin"),
            ("central diabetes insipidus", "Desmopressin"),
            ("uncomplicated gonorrhea", "Intramuscular ceftriaxone"),
            ("thrombotic thrombocytopenic purpura", "Plasma exchange"),
            ("eclamptic seizures", "Intravenous magnesium sulfate"),
            ("an acute asthma exacerbation", "Inhaled short-acting beta-2 agonist"),
        ),
    ),
    Relation(
        "hormone_source",
        (
            "Which cells produce {subject}?",
            "{subject} is secreted mainly by which cells?",
            "What is the main cellular source of {subject}?",
        ),
        (
            ("insulin", "Beta cells of the pancreatic islets"),
            ("glucagon", "Alpha cells of the pancreatic islets"),
            ("calcitonin", "Parafollicular (C) cells of the thyroid"),
            ("thyroxine", "Follicular cells of the thyroid"),
            ("parathyroid hormone", "Chief cells of the parathyroid glands"),
            ("cortisol", "Zona fasciculata of the adrenal cortex"),
            ("aldosterone", "Zona glomerulosa of the adrenal cortex"),
            ("dehydroepiandrosterone (DHEA)", "Zona reticularis of the adrenal cortex"),
            ("epinephrine", "Chromaffin cells of the adrenal medulla"),
            ("growth hormone", "Somatotrophs of the anterior pituitary"),
            ("prolactin", "Lactotrophs of the anterior pituitary"),
            ("adrenocorticotropic hormone (ACTH)", "Corticotrophs of the anterior pituitary"),
            ("luteinizing hormone", "Gonadotrophs of the anterior pituitary"),
            ("antidiuretic hormone", "Neurons of the hypothalamic supraoptic and paraventricular nuclei"),
            ("testosterone in men", "Leydig cells of the testis"),
            ("inhibin B in men", "Sertoli cells of the testis"),
            ("progesterone after ovulation", "Corpus luteum of the ovary"),
            ("human chorionic gonadotropin", "Syncytiotrophoblast of the placenta"),
            ("erythropoietin", "Peritubular interstitial fibroblasts of the renal cortex"),
            ("renin", "Juxtaglomerular cells of the kidney"),
            ("gastrin", "G cells of the gastric antrum"),
            ("secretin", "S cells of the duodenum"),
            ("cholecystokinin", "I cells of the duodenum and jejunum"),
            ("melatonin", "Pinealocytes of the pineal gland"),
            ("atrial natriuretic peptide", "Atrial cardiac myocytes"),
            ("leptin", "Adipocytes"),
        ),
    ),
    Relation(
        "nerve_injury",
        (
            "Injury to the {subject} most characteristically causes which deficit?",
            "Which finding is typical after damage to the {subject}?",
        ),
        (
            ("axillary nerve", "Weak shoulder abduction with numbness over the lateral shoulder"),
            ("long thoracic nerve", "Winged scapula"),
            ("radial nerve in the spiral groove", "Wrist drop"),
            ("median nerve at the wrist", "Thenar weakness with numbness of the thumb, index and middle fingers"),
            ("ulnar nerve", "Claw hand with numbness of the little finger"),
            ("musculocutaneous nerve", "Weak elbow flexion and supination with numbness of the lateral forearm"),
            ("common fibular (peroneal) nerve", "Foot drop with numbness of the dorsum of the foot"),
            ("tibial nerve", "Weak plantar flexion and toe flexion with numbness of the sole"),
            ("femoral nerve", "Weak knee extension with a reduced patellar reflex"),
            ("obturator nerve", "Weak adduction of the thigh"),
            ("superior gluteal nerve", "Trendelenburg sign, with the pelvis dropping on the opposite side"),
            ("phrenic nerve", "Paralysis of the hemidiaphragm on the same side"),
            ("recurrent laryngeal nerve", "Hoarseness from vocal cord paralysis"),
            ("lateral femoral cutaneous nerve", "Burning numbness of the lateral thigh (meralgia paresthetica)"),
            ("facial nerve at the stylomastoid foramen", "Paralysis of one whole side of the face, forehead included"),
            ("hypoglossal nerve", "Deviation of the protruded tongue toward the injured side"),
            ("oculomotor nerve", "Ptosis, a dilated pupil and an eye turned down and out"),
            ("abducens nerve", "Inability to abduct the eye, with horizontal double vision"),
            ("trochlear nerve", "Vertical double vision that is worst when looking down and inward"),
        ),
    ),
    Relation(
        "cranial_nerve_name",
        (
            "What is the name of cranial nerve {subject}?",
            "Cranial nerve {subject} is known as which nerve?",
        ),
        tuple(CN_NAMES.items()),
    ),
    Relation(
        "cranial_nerve_function",
        (
            "Which cranial nerve is responsible for {subject}?",
            "{subject} depends on which cranial nerve?",
        ),
        (
            ("motor supply to the lateral rectus muscle", _cn("VI")),
            ("motor supply to the superior oblique muscle", _cn("IV")),
            ("motor supply to the muscles of mastication", _cn("V")),
            ("motor supply to the muscles of facial expression", _cn("VII")),
            ("taste from the anterior two-thirds of the tongue", _cn("VII")),
            ("taste from the posterior one-third of the tongue", _cn("IX")),
            ("general sensation from the skin of the face", _cn("V")),
            ("motor supply to the sternocleidomastoid and trapezius", _cn("XI")),
            ("motor supply to most muscles of the tongue", _cn("XII")),
            ("parasympathetic supply to the pupillary sphincter", _cn("III")),
            ("the sense of smell", _cn("I")),
            ("hearing and balance", _cn("VIII")),
            ("parasympathetic supply to the heart and most abdominal viscera", _cn("X")),
            ("parasympathetic stimulation of parotid gland secretion", _cn("IX")),
            ("vision", _cn("II")),
            ("motor supply to the intrinsic muscles of the larynx", _cn("X")),
            ("the afferent limb of the corneal reflex", _cn("V")),
            ("the afferent limb of the gag reflex", _cn("IX")),
        ),
    ),
    Relation(
        "structure_function",
        (
            "Which structure is chiefly responsible for {subject}?",
            "{subject} is the main role of which structure?",
        ),
        (
            ("producing bile", "Liver"),
            ("storing and concentrating bile", "Gallbladder"),
            ("maturation of T lymphocytes", "Thymus"),
            ("absorbing most dietary nutrients", "Small intestine"),
            ("secreting most digestive enzymes", "Exocrine pancreas"),
            ("filtering plasma to form the initial urinary filtrate", "Glomerulus"),
            ("reabsorbing most filtered sodium, glucose and amino acids", "Proximal convoluted tubule"),
            ("creating the medullary concentration gradient by countercurrent multiplication", "Loop of Henle"),
            ("water reabsorption regulated by antidiuretic hormone", "Collecting duct"),
            ("producing sperm", "Seminiferous tubules of the testis"),
            ("maturation and storage of sperm", "Epididymis"),
            ("serving as the usual site of fertilization", "Ampulla of the uterine tube"),
            ("initiating each normal heartbeat", "Sinoatrial node"),
            ("delaying conduction between the atria and the ventricles", "Atrioventricular node"),
            ("producing cerebrospinal fluid", "Choroid plexus"),
            ("returning cerebrospinal fluid to the venous blood", "Arachnoid granulations"),
            ("coordinating movement and balance", "Cerebellum"),
            ("regulating body temperature, hunger and thirst", "Hypothalamus"),
            ("issuing voluntary motor commands (primary motor cortex)", "Precentral gyrus"),
            ("primary processing of touch and body position sense", "Postcentral gyrus"),
            ("producing speech (expressive language)", "Broca area of the inferior frontal gyrus"),
            ("understanding spoken language", "Wernicke area of the superior temporal gyrus"),
            ("forming new long-term declarative memories", "Hippocampus"),
            ("processing fear", "Amygdala"),
            ("generating the basic rhythm of breathing", "Medulla oblongata"),
            ("primary processing of vision", "Occipital lobe"),
        ),
    ),
    Relation(
        "cell_function",
        (
            "Which cell type is responsible for {subject}?",
            "{subject} is the main function of which cells?",
        ),
        (
            ("carrying oxygen from the lungs to the tissues", "Erythrocytes"),
            ("forming the primary hemostatic plug", "Platelets"),
            ("phagocytosing bacteria as the first responders of acute inflammation", "Neutrophils"),
            ("defending against helminth parasites", "Eosinophils"),
            ("entering tissues to become macrophages", "Monocytes"),
            ("secreting large amounts of antibody", "Plasma cells"),
            ("killing virus-infected cells that present antigen on MHC class I", "Cytotoxic CD8+ T cells"),
            ("killing cells that lack MHC class I without prior sensitization", "Natural killer cells"),
            ("directing immune responses after recognizing antigen on MHC class II", "Helper CD4+ T cells"),
            ("producing platelets in the bone marrow", "Megakaryocytes"),
            ("activating naive T cells as the most potent antigen-presenting cells", "Dendritic cells"),
            ("producing pulmonary surfactant", "Type II pneumocytes"),
            ("secreting gastric acid and intrinsic factor", "Parietal cells"),
            ("secreting pepsinogen in the stomach", "Gastric chief cells"),
            ("myelinating axons in the central nervous system", "Oligodendrocytes"),
            ("myelinating axons in the peripheral nervous system", "Schwann cells"),
            ("acting as the resident immune phagocytes of the brain", "Microglia"),
            ("resorbing bone", "Osteoclasts"),
            ("laying down new bone matrix", "Osteoblasts"),
            ("storing vitamin A in the liver and driving hepatic fibrosis", "Hepatic stellate (Ito) cells"),
            ("acting as the resident macrophages of the liver sinusoids", "Kupffer cells"),
            ("secreting mucus in the airway and intestinal epithelium", "Goblet cells"),
            ("secreting defensins and lysozyme in the small intestinal crypts", "Paneth cells"),
            ("forming the filtration slits of the glomerulus", "Podocytes"),
            ("producing melanin pigment in the skin", "Melanocytes"),
            ("producing the matrix of hyaline cartilage", "Chondrocytes"),
        ),
    ),
    Relation(
        "lab_finding",
        (
            "Which condition is most strongly suggested by {subject}?",
            "A patient with {subject} most likely has which condition?",
        ),
        (
            ("anti-double-stranded DNA antibodies", "Systemic lupus erythematosus"),
            ("anti-centromere antibodies", "Limited cutaneous systemic sclerosis (CREST syndrome)"),
            ("anti-cyclic citrullinated peptide antibodies", "Rheumatoid arthritis"),
            ("TSH receptor-stimulating antibodies", "Graves disease"),
            ("anti-thyroid peroxidase antibodies in a hypothyroid patient", "Hashimoto thyroiditis"),
            ("anti-acetylcholine receptor antibodies", "Myasthenia gravis"),
            ("anti-mitochondrial antibodies", "Primary biliary cholangitis"),
            ("PR3-ANCA (c-ANCA)", "Granulomatosis with polyangiitis"),
            ("IgA anti-tissue transglutaminase antibodies", "Celiac disease"),
            ("anti-glomerular basement membrane antibodies", "Goodpasture syndrome"),
            ("anti-smooth muscle antibodies", "Autoimmune hepatitis"),
            ("anti-intrinsic factor antibodies", "Pernicious anemia"),
            ("anti-phospholipase A2 receptor antibodies", "Primary membranous nephropathy"),
            ("anti-desmoglein 3 antibodies", "Pemphigus vulgaris"),
            ("an elevated sweat chloride concentration", "Cystic fibrosis"),
            ("a raised urinary 5-hydroxyindoleacetic acid (5-HIAA)", "Carcinoid syndrome"),
            ("raised plasma free metanephrines", "Pheochromocytoma"),
            ("a positive heterophile antibody (Monospot) test", "Infectious mononucleosis"),
            ("Auer rods in blast cells", "Acute myeloid leukemia"),
            ("smudge cells with a mature-appearing lymphocytosis", "Chronic lymphocytic leukemia"),
            ("Reed-Sternberg cells in a lymph node", "Hodgkin lymphoma"),
            ("Heinz bodies and bite cells after an oxidant drug", "G6PD deficiency"),
            ("a low serum ceruloplasmin with high urinary copper", "Wilson disease"),
            ("high serum calcium with an inappropriately high parathyroid hormone", "Primary hyperparathyroidism"),
            ("hypokalemic hypertension with high aldosterone and suppressed renin", "Primary hyperaldosteronism"),
            ("needle-shaped, negatively birefringent crystals in joint fluid", "Gout"),
            ("rhomboid, positively birefringent crystals in joint fluid", "Calcium pyrophosphate deposition disease"),
            ("oligoclonal IgG bands confined to the cerebrospinal fluid", "Multiple sclerosis"),
            ("raised CSF protein with a normal CSF cell count", "Guillain-Barre syndrome"),
            ("muddy brown granular casts in the urine", "Acute tubular necrosis"),
            ("hemoglobin S as the main hemoglobin on electrophoresis", "Sickle cell disease"),
            ("raised hemoglobin A2 with microcytosis and normal iron studies", "Beta-thalassemia trait"),
        ),
    ),
    Relation(
        "antidote",
        (
            "{subject} is the specific antidote for which agent?",
            "Toxicity from which agent is reversed by {subject}?",
        ),
        (
            ("naloxone", "Opioids"),
            ("flumazenil", "Benzodiazepines"),
            ("N-acetylcysteine", "Acetaminophen (paracetamol)"),
            ("fomepizole", "Methanol or ethylene glycol"),
            ("pralidoxime with atropine", "Organophosphate insecticides"),
            ("physostigmine", "Anticholinergic (antimuscarinic) drugs"),
            ("digoxin-specific antibody fragments", "Digoxin"),
            ("protamine sulfate", "Heparin"),
            ("vitamin K with prothrombin complex concentrate", "Warfarin"),
            ("idarucizumab", "Dabigatran"),
            ("andexanet alfa", "Factor Xa inhibitors such as apixaban"),
            ("deferoxamine", "Iron"),
            ("succimer", "Lead"),
            ("hydroxocobalamin", "Cyanide"),
            ("methylene blue", "Methemoglobin-forming agents such as dapsone"),
            ("hyperbaric oxygen", "Carbon monoxide"),
            ("sodium bicarbonate", "Tricyclic antidepressants"),
            ("glucagon", "Beta-blockers"),
            ("octreotide", "Sulfonylureas"),
            ("cyproheptadine", "Serotonergic drugs causing serotonin syndrome"),
            ("leucovorin (folinic acid)", "Methotrexate"),
            ("Prussian blue", "Thallium"),
            ("sugammadex", "Rocuronium"),
        ),
    ),
    Relation(
        "vaccine_type",
        (
            "Which type of vaccine is routinely used to prevent {subject}?",
            "The standard vaccine against {subject} is of which type?",
        ),
        (
            ("measles", LIVE),
            ("mumps", LIVE),
            ("rubella", LIVE),
            ("varicella (chickenpox)", LIVE),
            ("yellow fever", LIVE),
            ("rotavirus gastroenteritis", LIVE),
            ("tuberculosis (the BCG vaccine)", LIVE),
            ("polio where only the injected (Salk) vaccine is used", INACTIVATED),
            ("hepatitis A", INACTIVATED),
            ("rabies", INACTIVATED),
            ("tetanus", TOXOID),
            ("diphtheria", TOXOID),
            ("hepatitis B", SUBUNIT),
            ("human papillomavirus infection", SUBUNIT),
            ("Haemophilus influenzae type b disease", CONJUGATE),
            ("pneumococcal disease in infants", CONJUGATE),
            ("meningococcal disease due to serogroups A, C, W and Y", CONJUGATE),
        ),
    ),
    Relation(
        "vignette_diagnosis",
        (
            "{subject} What is the most likely diagnosis?",
            "{subject} Which diagnosis best explains this presentation?",
        ),
        (
            (
                "A 24-year-old woman has a rash across her cheeks and nose that spares the nasolabial folds, "
                "painful swollen finger joints and protein in her urine.",
                "Systemic lupus erythematosus",
            ),
            (
                "A 55-year-old man wakes at night with an exquisitely painful, hot, swollen big-toe joint after an "
                "evening of heavy drinking.",
                "Acute gout",
            ),
            (
                "A 68-year-old man has a resting tremor of one hand, slow movements, cogwheel rigidity and a "
                "shuffling gait.",
                "Parkinson disease",
            ),
            (
                "A 30-year-old woman has double vision and drooping eyelids that get worse through the day and "
                "improve after rest.",
                "Myasthenia gravis",
            ),
            (
                "A 60-year-old smoker has 40 minutes of crushing central chest pain spreading to the left arm, with "
                "ST elevation in leads II, III and aVF.",
                "Acute inferior myocardial infarction",
            ),
            (
                "A 35-year-old woman has heat intolerance, weight loss, a diffuse painless goiter and bulging eyes.",
                "Graves disease",
            ),
            (
                "A 50-year-old woman has tiredness, cold intolerance, weight gain, constipation and dry skin, with a "
                "high TSH.",
                "Primary hypothyroidism",
            ),
            (
                "A 19-year-old student has fever, a sore throat, swollen posterior neck lymph nodes and an enlarged "
                "spleen.",
                "Infectious mononucleosis",
            ),
            (
                "A 45-year-old woman has a sudden, explosive headache that she calls the worst of her life, followed "
                "by vomiting and a stiff neck.",
                "Subarachnoid hemorrhage",
            ),
            (
                "A 22-year-old man has pain that began around the navel and moved to the right lower abdomen, with "
                "fever and loss of appetite.",
                "Acute appendicitis",
            ),
            (
                "A 50-year-old man who drinks heavily has severe upper abdominal pain boring through to the back, "
                "with vomiting and a serum lipase five times normal.",
                "Acute pancreatitis",
            ),
            (
                "A 70-year-old man has painless jaundice, weight loss and a palpable, non-tender gallbladder.",
                "Carcinoma of the head of the pancreas",
            ),
            (
                "A 12-year-old has thirst, frequent urination, weight loss, deep rapid breathing and fruity-smelling "
                "breath; his blood glucose is very high.",
                "Diabetic ketoacidosis",
            ),
            (
                "A 28-year-old woman with heavy periods has fatigue, pale conjunctivae, spoon-shaped nails and a low "
                "serum ferritin.",
                "Iron deficiency anemia",
            ),
            (
                "A 74-year-old woman has had slowly worsening memory loss for three years and now gets lost in "
                "familiar places; the neurological examination is otherwise normal.",
                "Alzheimer disease",
            ),
            (
                "A 26-year-old woman had painful loss of vision in one eye last year and now has numbness and "
                "weakness of her legs; MRI shows several white matter lesions.",
                "Multiple sclerosis",
            ),
            (
                "A 75-year-old woman has a new headache, a tender scalp, jaw pain when chewing and a very high ESR.",
                "Giant cell arteritis",
            ),
            (
                "A 27-year-old man has low back pain and morning stiffness lasting an hour that improve with "
                "exercise, and reduced chest expansion.",
                "Ankylosing spondylitis",
            ),
            (
                "A 60-year-old smoker has had a cough productive of sputum for at least three months in each of the "
                "past two years.",
                "Chronic bronchitis",
            ),
            (
                "A 16-year-old has episodes of wheeze, chest tightness and cough brought on by cold air and exercise "
                "that resolve with an inhaler.",
                "Asthma",
            ),
            (
                "Ten days after hip surgery a 65-year-old woman develops sudden breathlessness and pleuritic chest "
                "pain, with a fast heart rate and a swollen calf.",
                "Pulmonary embolism",
            ),
            (
                "A tall, thin 20-year-old man has sudden one-sided chest pain and breathlessness; that side is "
                "hyperresonant with absent breath sounds.",
                "Primary spontaneous pneumothorax",
            ),
            (
                "A 40-year-old woman has weight gain around the trunk, a rounded face, wide purple abdominal "
                "striae and weak proximal muscles.",
                "Cushing syndrome",
            ),
            (
                "A 35-year-old man has fatigue, weight loss, darkened skin in his palm creases, low blood pressure, "
                "a low sodium and a high potassium.",
                "Primary adrenal insufficiency",
            ),
            (
                "A 25-year-old woman has burning on urination, urinary frequency and lower abdominal discomfort, "
                "without fever or flank pain.",
                "Acute cystitis",
            ),
            (
                "A 45-year-old man has sudden colicky flank pain spreading to the groin, with blood in his urine.",
                "Ureteric stone",
            ),
            (
                "A 65-year-old woman has a band of painful blisters on one side of her chest that was preceded by "
                "two days of burning pain in the same area.",
                "Herpes zoster (shingles)",
            ),
            (
                "A 68-year-old woman has sudden severe pain in one red eye, halos around lights, a mid-dilated "
                "unreactive pupil and vomiting.",
                "Acute angle-closure glaucoma",
            ),
            (
                "A 3-year-old has had fever for six days with red eyes without discharge, cracked red lips, swollen "
                "hands and feet and an enlarged neck lymph node.",
                "Kawasaki disease",
            ),
            (
                "A 2-year-old has a barking cough, hoarseness and inspiratory stridor after a few days of a runny "
                "nose.",
                "Croup",
            ),
            (
                "A 66-year-old smoker has cramping calf pain after walking two blocks that goes away within minutes "
                "of rest.",
                "Peripheral arterial disease",
            ),
            (
                "A 29-year-old man has recurrent bloody diarrhea with mucus; colonoscopy shows continuous "
                "inflammation extending up from the rectum.",
                "Ulcerative colitis",
            ),
            (
                "A 24-year-old woman has cramping abdominal pain, diarrhea and weight loss; colonoscopy shows "
                "patchy, cobblestoned inflammation of the terminal ileum.",
                "Crohn disease",
            ),
        ),
    ),
    Relation(
        "enzyme_deficiency",
        (
            "Deficiency of {subject} causes which disorder?",
            "Which inherited disorder results from a lack of {subject}?",
        ),
        (
            ("phenylalanine hydroxylase", "Phenylketonuria"),
            ("homogentisate oxidase", "Alkaptonuria"),
            ("tyrosinase", "Oculocutaneous albinism"),
            ("branched-chain alpha-ketoacid dehydrogenase", "Maple syrup urine disease"),
            ("cystathionine beta-synthase", "Homocystinuria"),
            ("glucose-6-phosphatase", "Von Gierke disease (glycogen storage disease type I)"),
            ("lysosomal acid alpha-glucosidase", "Pompe disease (glycogen storage disease type II)"),
            ("muscle glycogen phosphorylase", "McArdle disease (glycogen storage disease type V)"),
            ("glucocerebrosidase", "Gaucher disease"),
            ("hexosaminidase A", "Tay-Sachs disease"),
            ("sphingomyelinase", "Niemann-Pick disease"),
            ("alpha-galactosidase A", "Fabry disease"),
            ("galactocerebrosidase", "Krabbe disease"),
            ("arylsulfatase A", "Metachromatic leukodystrophy"),
            ("alpha-L-iduronidase", "Hurler syndrome"),
            ("iduronate-2-sulfatase", "Hunter syndrome"),
            ("21-hydroxylase", "Congenital adrenal hyperplasia with salt wasting"),
            ("galactose-1-phosphate uridylyltransferase", "Classic galactosemia"),
            ("aldolase B", "Hereditary fructose intolerance"),
            ("fructokinase", "Essential fructosuria"),
            ("hypoxanthine-guanine phosphoribosyltransferase", "Lesch-Nyhan syndrome"),
            ("adenosine deaminase", "Severe combined immunodeficiency"),
            ("uroporphyrinogen decarboxylase", "Porphyria cutanea tarda"),
            ("porphobilinogen deaminase", "Acute intermittent porphyria"),
            ("lipoprotein lipase", "Familial chylomicronemia syndrome"),
        ),
    ),
    Relation(
        "inheritance_pattern",
        (
            "What is the usual inheritance pattern of {subject}?",
            "{subject} is typically inherited in which pattern?",
        ),
        (
            ("Huntington disease", AD),
            ("Marfan syndrome", AD),
            ("neurofibromatosis type 1", AD),
            ("familial hypercholesterolemia", AD),
            ("achondroplasia", AD),
            ("hereditary spherocytosis", AD),
            ("myotonic dystrophy", AD),
            ("cystic fibrosis", AR),
            ("sickle cell disease", AR),
            ("phenylketonuria", AR),
            ("Tay-Sachs disease", AR),
            ("HFE hereditary hemochromatosis", AR),
            ("Wilson disease", AR),
            ("spinal muscular atrophy", AR),
            ("hemophilia A", XR),
            ("Duchenne muscular dystrophy", XR),
            ("G6PD deficiency", XR),
            ("red-green color blindness", XR),
            ("Lesch-Nyhan syndrome", XR),
            ("Rett syndrome", XD),
            ("incontinentia pigmenti", XD),
            ("Leber hereditary optic neuropathy", MITO),
            ("MELAS (mitochondrial encephalomyopathy, lactic acidosis and stroke-like episodes)", MITO),
            ("MERRF (myoclonic epilepsy with ragged red fibers)", MITO),
        ),
    ),
    Relation(
        "tumor_marker",
        (
            "A raised {subject} is most characteristic of which cancer?",
            "Which cancer is followed up by measuring {subject}?",
        ),
        (
            ("CA-125", "Epithelial ovarian cancer"),
            ("CA 19-9", "Pancreatic adenocarcinoma"),
            ("carcinoembryonic antigen (CEA)", "Colorectal cancer"),
            ("prostate-specific antigen (PSA)", "Prostate cancer"),
            ("calcitonin", "Medullary thyroid carcinoma"),
            ("serum alpha-fetoprotein", "Hepatocellular carcinoma"),
            ("CA 15-3", "Breast cancer"),
            ("urinary free light chains (Bence Jones protein)", "Multiple myeloma"),
            ("chromogranin A", "Neuroendocrine tumors"),
            ("serum thyroglobulin after total thyroidectomy", "Papillary or follicular thyroid cancer"),
        ),
    ),
    Relation(
        "disease_vector",
        (
            "Which vector transmits {subject}?",
            "{subject} is spread to humans mainly by which vector?",
        ),
        (
            ("malaria", "Female Anopheles mosquito"),
            ("dengue fever", "Aedes mosquito"),
            ("West Nile virus infection", "Culex mosquito"),
            ("Lyme disease", "Ixodes (deer) tick"),
            ("Rocky Mountain spotted fever", "Dermacentor (dog or wood) tick"),
            ("Chagas disease", "Triatomine (kissing) bug"),
            ("African sleeping sickness", "Tsetse fly"),
            ("leishmaniasis", "Sandfly"),
            ("bubonic plague", "Rat flea"),
            ("epidemic typhus", "Human body louse"),
            ("river blindness", "Blackfly"),
            ("loiasis", "Deer fly (Chrysops)"),
            ("scrub typhus", "Chiggers (larval trombiculid mites)"),
        ),
    ),
    Relation(
        "adverse_effect",
        (
            "Which adverse effect is classically associated with {subject}?",
            "Which adverse effect is most characteristic of {subject}?",
        ),
        (
            ("ACE inhibitors", "Dry cough"),
            ("rapid intravenous vancomycin infusion", "Flushing of the face and upper body"),
            ("fluoroquinolones", "Tendon rupture"),
            ("tetracyclines given to young children", "Permanent tooth discoloration"),
            ("ethambutol", "Optic neuritis with red-green color vision loss"),
            ("rifampin", "Orange-red discoloration of urine and tears"),
            ("metformin", "Lactic acidosis"),
            ("statins", "Myopathy"),
            ("lithium", "Nephrogenic diabetes insipidus"),
            ("clozapine", "Agranulocytosis"),
            ("haloperidol", "Acute dystonia and other extrapyramidal symptoms"),
            ("cyclophosphamide", "Hemorrhagic cystitis"),
            ("doxorubicin", "Dilated cardiomyopathy"),
            ("bleomycin", "Pulmonary fibrosis"),
            ("heparin", "Immune-mediated thrombocytopenia with thrombosis"),
            ("hydralazine", "Drug-induced lupus"),
            ("digoxin toxicity", "Yellow-tinted vision"),
            ("metronidazole taken with alcohol", "Disulfiram-like reaction"),
            ("nonselective beta-blockers in a patient with asthma", "Bronchospasm"),
            ("sulfonylureas", "Hypoglycemia"),
            ("SGLT2 inhibitors", "Genital fungal infections"),
            ("bisphosphonates", "Osteonecrosis of the jaw"),
            ("tamoxifen", "Endometrial carcinoma"),
            ("valproate taken in early pregnancy", "Neural tube defects"),
        ),
    ),
)

# The OOD split's question style: from a relation's answer back to its subject, "Which of the following ...",
# with an ``{answer}`` slot (after a colon, so the answer keeps its capital). Absent relations are not asked.
OOD_TEMPLATES: dict[str, tuple[str, ...]] = {
    "nutrient_deficiency": (
        "Which of the following, when deficient, classically causes this condition: {answer}?",
        "A lack of which of the following is the classic cause of this condition: {answer}?",
    ),
    "disease_organism": (
        "Which of the following is usually caused by this organism: {answer}?",
        "Which of the following has this usual causative agent: {answer}?",
    ),
    "drug_class": (
        "Which of the following drugs belongs to this class: {answer}?",
        "Which of the following is an example of this drug class: {answer}?",
    ),
    "drug_mechanism": (
        "Which of the following acts by this mechanism: {answer}?",
        "Which of the following has this mechanism of action: {answer}?",
    ),
    "first_line_treatment": (
        "For which of the following is this the first-line treatment: {answer}?",
        "Which of the following is treated first with this therapy: {answer}?",
    ),
    "hormone_source": (
        "Which of the following is produced mainly by these cells: {answer}?",
        "Which of the following has this main cellular source: {answer}?",
    ),
    "nerve_injury": (
        "Injury to which of the following most characteristically causes this deficit: {answer}?",
        "Damage to which of the following typically produces this finding: {answer}?",
    ),
    "cranial_nerve_name": (
        "Which of the following is the number of this cranial nerve: {answer}?",
        "Which of the following cranial nerve numbers belongs to this nerve: {answer}?",
    ),
    "cranial_nerve_function": (
        "Which of the following depends on this cranial nerve: {answer}?",
        "Which of the following is a function of this cranial nerve: {answer}?",
    ),
    "structure_function": (
        "Which of the following is the main role of this structure: {answer}?",
        "Which of the following is chiefly carried out by this structure: {answer}?",
    ),
    "cell_function": (
        "Which of the following is the main function of these cells: {answer}?",
        "Which of the following is chiefly carried out by this cell type: {answer}?",
    ),
    "lab_finding": (
        "Which of the following findings most strongly suggests this condition: {answer}?",
        "Which of the following is the most characteristic laboratory finding of this condition: {answer}?",
    ),
    "antidote": (
        "Which of the following is the specific antidote for this agent: {answer}?",
        "Which of the following reverses toxicity from this agent: {answer}?",
    ),
    "vaccine_type": (
        "Which of the following is routinely prevented with this type of vaccine: {answer}?",
        "The standard vaccine against which of the following is of this type: {answer}?",
    ),
    "enzyme_deficiency": (
        "Deficiency of which of the following enzymes causes this disorder: {answer}?",
        "Which of the following enzymes is lacking in this inherited disorder: {answer}?",
    ),
    "inheritance_pattern": (
        "Which of the following is typically inherited in this pattern: {answer}?",
        "Which of the following usually shows this inheritance pattern: {answer}?",
    ),
    "tumor_marker": (
        "A raised level of which of the following is most characteristic of this cancer: {answer}?",
        "Which of the following tumor markers is most characteristic of this cancer: {answer}?",
    ),
    "disease_vector": (
        "Which of the following is spread to humans mainly by this vector: {answer}?",
        "Which of the following is transmitted by this vector: {answer}?",
    ),
    "adverse_effect": (
        "Which of the following is classically associated with this adverse effect: {answer}?",
        "This adverse effect is most characteristic of which of the following: {answer}?",
    ),
}


def _split_facts(facts: list[tuple[str, str]]) -> dict[str, list[tuple[str, str]]]:
    """About 70/15/15 of an already shuffled fact list, with at least one fact in each held-out split."""
    held_out = max(1, round(HELD_OUT_FRACTION * len(facts)))
    return {
        "train": facts[2 * held_out :],
        "validation": facts[:held_out],
        "test": facts[held_out : 2 * held_out],
    }


def _make_example(
    relation: Relation, subject: str, answer: str, position: int, example_id: str, rng: random.Random
) -> MCQExample:
    """One question about ``subject`` with the correct answer at option index ``position``."""
    texts = rng.sample(relation.distractor_pool(answer), OPTION_COUNT - 1)
    texts.insert(position, answer)
    return MCQExample(
        question=relation.question(subject, rng),
        options=dict(zip(OPTION_LETTERS, texts)),
        answer=OPTION_LETTERS[position],
        source=SOURCE,
        id=example_id,
        metadata={"relation": relation.name},
    )


def _make_ood_example(
    relation: Relation, subject: str, answer: str, position: int, example_id: str, rng: random.Random
) -> MCQExample:
    """One OOD question asking which subject has ``answer``, the subject at option index ``position``."""
    texts = rng.sample(relation.subjects_without(answer), OOD_OPTION_COUNT - 1)
    texts.insert(position, subject)
    return MCQExample(
        question=rng.choice(OOD_TEMPLATES[relation.name]).format(answer=answer),
        options=dict(zip(OPTION_LETTERS, map(_capitalize, texts))),
        answer=OPTION_LETTERS[position],
        source=SOURCE,
        id=example_id,
        metadata={"relation": relation.name},
    )


def _generate_ood(held_out: list[tuple[Relation, str, str]], rng: random.Random) -> list[MCQExample]:
    """The OOD questions about the held-out facts of the relations that have OOD templates, positions balanced."""
    items = [item for item in held_out if item[0].name in OOD_TEMPLATES]
    rng.shuffle(items)
    positions = [index % OOD_OPTION_COUNT for index in range(len(items))]
    rng.shuffle(positions)
    return [
        _make_ood_example(relation, subject, answer, position, f"{SOURCE}-{OOD_SPLIT}-{number:04d}", rng)
        for number, ((relation, subject, answer), position) in enumerate(zip(items, positions), start=1)
    ]


def generate_bundled(seed: int = 0) -> dict[str, list[MCQExample]]:
    """Generate the train/validation/test questions from the knowledge base, and the OOD questions from the
    validation and test facts (with their own random stream), deterministically for ``seed``."""
    rng = random.Random(seed)
    items: dict[str, list[tuple[Relation, str, str]]] = {split: [] for split in SPLITS}
    for relation in RELATIONS:
        facts = list(relation.facts)
        rng.shuffle(facts)
        for split, chunk in _split_facts(facts).items():
            items[split] += [(relation, subject, answer) for subject, answer in chunk]
    splits = {}
    for split in SPLITS:
        rng.shuffle(items[split])
        positions = [index % OPTION_COUNT for index in range(len(items[split]))]
        rng.shuffle(positions)
        splits[split] = [
            _make_example(relation, subject, answer, position, f"{SOURCE}-{split}-{number:04d}", rng)
            for number, ((relation, subject, answer), position) in enumerate(zip(items[split], positions), start=1)
        ]
    splits[OOD_SPLIT] = _generate_ood(items["validation"] + items["test"], random.Random(f"{OOD_SPLIT}-{seed}"))
    return splits


def split_path(split: str, directory: Path = BUNDLED_DIR) -> Path:
    """The JSONL file of ``split``; raise ``ValueError`` naming the valid splits for an unknown one."""
    if split not in ALL_SPLITS:
        raise ValueError(f"unknown bundled split {split!r}; valid splits: {', '.join(ALL_SPLITS)}")
    return directory / f"{split}.jsonl"


def write_bundled(directory: Path = BUNDLED_DIR, seed: int = 0) -> list[Path]:
    """Generate the dataset and write one MedQA-schema JSONL file per split (metadata under ``meta_info``)."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for split, examples in generate_bundled(seed).items():
        paths.append(split_path(split, directory))
        write_medqa_jsonl([replace(ex, metadata={"meta_info": dict(ex.metadata)}) for ex in examples], paths[-1])
    return paths


def load_bundled(split: str) -> list[MCQExample]:
    """Read one split of the bundled dataset from its JSONL file."""
    return [
        replace(ex, source=SOURCE, metadata=dict(ex.metadata["meta_info"]))
        for ex in load_medqa_jsonl(split_path(split))
    ]


if __name__ == "__main__":
    for written in write_bundled():
        print(f"wrote {written}")
